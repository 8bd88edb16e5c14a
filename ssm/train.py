"""Training loop for the synthetic tasks: any :mod:`ssm.lm` model on any :mod:`ssm.tasks` task.

``train_and_evaluate(config, workdir)`` validates the config, builds the task and the model, and
runs :func:`harness.run_experiment` with

* ``init(key) -> TrainState`` (params, AdamW state, data key, step);
* ``update(state)``: ``train.steps_per_update`` jitted gradient steps inside one ``lax.scan``, each
  on a freshly generated batch (data regenerated every step, as in the Mamba paper's synthetic
  tasks, App. E.1), returning mean loss / accuracy;
* ``evaluate(state)``: exact-match accuracy on ``eval.num_batches`` fixed batches (a key derived
  from the seed, disjoint from the training stream; ListOps' held-out test pool) at the training length and at every length in
  ``eval.lengths`` (length generalisation, e.g. induction heads at 4x and 16x).

Parallelism (``config.parallel``, :mod:`harness.parallel`): every gradient step's batch is split
over the mesh axis ``"data"`` (``train.batch_size`` must divide), parameters and AdamW state are
replicated, and ``jax.jit`` (GSPMD) inserts the gradient all-reduce. ``parallel.fsdp=True`` shards
parameters and optimizer state over ``"data"`` too (:func:`harness.parallel.fsdp_shardings`;
GSPMD all-gathers a parameter where it is used). On one device both are the plain loop.

Config layout: see ``experiments/configs/ssm.py``. The model's vocabulary is the task's.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import harness
from harness import parallel
from ssm import lm, tasks

Array = jax.Array


class TrainState(NamedTuple):
    """params: the LM's variables; opt_state: optax state; key: data/dropout key; step: int32[]."""

    params: Any
    opt_state: Any
    key: Array
    step: Array


def validate_config(config) -> None:
    """Raises :class:`harness.ConfigError` naming the field and the allowed values."""
    lm.validate(config.model)
    harness.check_choice(config, "task.name", tasks.names())
    for f in (
        "task.seq_len",
        "train.batch_size",
        "train.num_updates",
        "train.steps_per_update",
        "train.checkpoint_every",
        "eval.batch_size",
        "eval.num_batches",
    ):
        harness.check_int(config, f, lo=1)  # fmt: skip
    harness.check_int(config, "train.warmup_steps", lo=0)
    harness.check_int(config, "train.eval_every", lo=0)
    harness.check_range(config, "train.lr", lo=0.0, lo_inclusive=False)
    harness.check_range(config, "train.weight_decay", lo=0.0)
    harness.check_range(config, "train.grad_clip", lo=0.0)
    for i, n in enumerate(config.eval.lengths):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise harness.ConfigError(f"config.eval.lengths[{i}]={n!r} must be a positive int")
    harness.check_choice(config, "parallel.fsdp", (False, True))
    mesh = parallel.mesh_from_config(config)
    parallel.check_divisible("train.batch_size", config.train.batch_size, mesh)


def make_task(config) -> tasks.Task:
    kwargs = dict(config.task.kwargs)
    return tasks.make(config.task.name, seq_len=config.task.seq_len, **kwargs)


def total_length(task: tasks.Task, seq_len: int) -> int:
    """Input length T for a task length parameter (selective copying adds 2 num_tokens)."""
    key = jax.random.PRNGKey(0)
    return jax.eval_shape(lambda k: task.sample(k, 1, seq_len), key).inputs.shape[1]


def make_model(config, task: tasks.Task) -> lm.LM:
    m = dict(config.model)
    lengths = [task.seq_len, *config.eval.lengths]
    m["vocab_size"] = task.vocab_size
    # Only S4 uses max_len in training: its C~ is defined for l_max and every step evaluates the
    # kernel at l_max, so make it exactly the longest evaluated sequence.
    m["max_len"] = max(total_length(task, n) for n in lengths)
    return lm.make_model(m)


# Leaf names that get weight decay: the weight matrices of linear layers, convs and embeddings.
# Everything else is excluded: A_log and D (upstream ``_no_weight_decay``), dt/conv/linear
# biases, norm scales, and the S4/S4D SSM parameters (the S4 reference's ``_optim`` wd 0).
DECAYED = frozenset({"kernel", "embedding", "conv_w", "dt_w"})


def weight_decay_mask(params: Any) -> Any:
    """Pytree of bools like ``params``: True where AdamW should apply weight decay."""

    def decayed(path, _):
        last = path[-1]
        return getattr(last, "key", getattr(last, "name", None)) in DECAYED

    return jax.tree_util.tree_map_with_path(decayed, params)


def make_optimizer(config) -> optax.GradientTransformation:
    """AdamW, linear warm-up then constant lr (the Mamba paper's synthetic tasks use a constant
    lr); weight decay only where :func:`weight_decay_mask` says."""
    t = config.train
    sched = optax.join_schedules(
        [optax.linear_schedule(0.0, t.lr, max(t.warmup_steps, 1)), optax.constant_schedule(t.lr)],
        [max(t.warmup_steps, 1)],
    )
    chain = [optax.adamw(sched, weight_decay=t.weight_decay, mask=weight_decay_mask)]
    if t.grad_clip > 0:
        chain.insert(0, optax.clip_by_global_norm(t.grad_clip))
    return optax.chain(*chain)


def state_shardings(state: TrainState, mesh, fsdp: bool) -> TrainState:
    """Where each leaf of ``state`` (arrays or shapes) lives: params and optimizer state
    replicated, or FSDP-sharded over ``"data"`` with ``fsdp``; key and step replicated."""
    return TrainState(
        params=parallel.param_shardings(state.params, mesh, fsdp),
        opt_state=parallel.param_shardings(state.opt_state, mesh, fsdp),
        key=parallel.replicated(mesh),
        step=parallel.replicated(mesh),
    )


def make_init(model: lm.LM, opt, mesh=None, fsdp=False):
    """``init(key) -> TrainState``: LM init, AdamW state, data key, step 0; placed by
    :func:`state_shardings` on ``mesh`` (None: left where JAX puts it)."""

    def init(key):
        k_params, k_data = jax.random.split(key)
        params = lm.init_params(model, k_params)
        state = TrainState(params, opt.init(params), k_data, jnp.zeros((), jnp.int32))
        if mesh is None:
            return state
        return jax.device_put(state, state_shardings(state, mesh, fsdp))

    return init


def make_update(
    model: lm.LM, task: tasks.Task, opt, batch_size: int, steps: int, mesh=None, fsdp=False
):
    """``state -> (state, metrics)`` running ``steps`` gradient steps in one jitted ``lax.scan``.

    ``mesh`` (a :class:`jax.sharding.Mesh` with a ``"data"`` axis; None = one device): each
    step's batch [batch_size, T] is split over ``"data"`` and the state placed by
    :func:`state_shardings` (the state passed in is moved there first, e.g. after a restore)."""

    def loss(params, batch):
        logits, _ = model.apply(params, batch.inputs)
        return tasks.loss_fn(logits, batch), tasks.accuracy(logits, batch)

    def place(state: TrainState) -> TrainState:
        if mesh is None:
            return state
        return jax.lax.with_sharding_constraint(state, state_shardings(state, mesh, fsdp))

    def one_step(state: TrainState, _):
        key, k_data = jax.random.split(state.key)
        batch = task.sample(k_data, batch_size)
        if mesh is not None:
            batch = parallel.shard_rows(batch, mesh)
        (l, acc), grads = jax.value_and_grad(loss, has_aux=True)(state.params, batch)
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"train/loss": l, "train/token_acc": acc["token_acc"],
                   "train/grad_norm": optax.global_norm(grads)}  # fmt: skip
        return place(TrainState(params, opt_state, key, state.step + 1)), metrics

    @jax.jit
    def scan(state: TrainState):
        state, metrics = jax.lax.scan(one_step, place(state), None, length=steps)
        return state, jax.tree.map(jnp.mean, metrics)

    def update(state: TrainState):
        if mesh is not None:
            state = jax.device_put(state, state_shardings(state, mesh, fsdp))
        return scan(state)

    update.jitted = scan  # the compiled scan, for inspecting its partitioning
    return update


def make_evaluate(model: lm.LM, task: tasks.Task, config, mesh=None):
    """Host-side ``state -> metrics``: mean exact match over fixed batches at each length
    (each batch split over ``mesh``'s ``"data"`` axis when ``eval.batch_size`` divides)."""
    lengths = [task.seq_len, *[n for n in config.eval.lengths if n != task.seq_len]]
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), 0x5EED)

    @jax.jit
    def acc_fn(params, batch):
        if mesh is not None:
            batch = parallel.shard_rows(batch, mesh)
        return tasks.accuracy(model.apply(params, batch.inputs)[0], batch)

    def evaluate(state: TrainState) -> dict[str, float]:
        out = {}
        for n in lengths:
            accs = []
            for i in range(config.eval.num_batches):
                batch = task.sample_eval(jax.random.fold_in(key, i), config.eval.batch_size, n)
                accs.append(acc_fn(state.params, batch))
            tok = float(jnp.mean(jnp.stack([a["token_acc"] for a in accs])))
            seq = float(jnp.mean(jnp.stack([a["seq_acc"] for a in accs])))
            suffix = "" if n == task.seq_len else f"_L{n}"
            out[f"eval/token_acc{suffix}"] = tok
            out[f"eval/seq_acc{suffix}"] = seq
        return out

    return evaluate


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Validates ``config``, trains, evaluates; returns the harness summary."""
    validate_config(config)
    task = make_task(config)
    model = make_model(config, task)
    opt = make_optimizer(config)
    t = config.train
    mesh, fsdp = parallel.mesh_from_config(config), config.parallel.fsdp
    init = make_init(model, opt, mesh, fsdp)
    update = make_update(model, task, opt, t.batch_size, t.steps_per_update, mesh, fsdp)
    evaluate = make_evaluate(model, task, config, mesh)
    eval_curves = ["eval/token_acc"] + [
        f"eval/token_acc_L{n}" for n in config.eval.lengths if n != task.seq_len
    ]
    name = f"ssm:{config.model.layer}:{config.task.name}"
    return harness.run_experiment(
        config,
        workdir,
        init=init,
        update=update,
        num_updates=t.num_updates,
        seed=config.seed,
        checkpoint_every=t.checkpoint_every,
        evaluate=evaluate,
        eval_every=t.eval_every or None,
        plots={
            "loss.png": harness.Plot(
                ["train/loss"], title=f"{name}: training loss", ylabel="cross-entropy (nats)"
            ),
            "accuracy.png": harness.Plot(
                ["train/token_acc", *eval_curves],
                title=f"{name}: token accuracy",
                ylabel="token accuracy",
            ),
        },
        desc=name,
        headline=["train/loss", "eval/token_acc", "eval/seq_acc"],
        x_label=f"update ({t.steps_per_update} gradient steps each)",
        progress=config.get("progress", True),
    )
