"""SFT on demonstrations, then outcome-only RL (SimpleVLA-RL, arXiv 2509.09674; FLOWRL.md §6).

Pipeline of one run (``train_and_evaluate``), every phase vmapped over ``num_seeds`` seeds:

1. scenes: ``env.per_task`` fixed initial states per task, kept where the scripted expert
   succeeds (candidates are drawn until enough are solved); the expert's closed-loop episodes are
   the demonstrations, and their per-dimension q01/q99 are the action bounds;
2. SFT (``sft.num_updates`` harness updates): negative log-likelihood (``flowrl`` loss ``sft``)
   of the demonstration chunks, on one demonstration per task (``sft.demos = "one"``: each
   task's first initial state) or on all of them;
3. RL (``rl.num_updates``): closed-loop rollouts of ``rl.group_size`` (n = 8) episodes per
   (task, initial state) at temperature ``rl.temperature`` (1.6), binary success reward, GRPO
   advantage (``flowrl.advantages``) broadcast to every action token up to the finishing chunk,
   the registry's PPO-clip loss with clip range [1 - clip_low, 1 + clip_high] = [0.8, 1.28], no
   KL, no entropy bonus; dynamic sampling (``flowrl.sampling.group_keep_mask``) keeps groups with
   1..7 successes out of 8, refilling up to ``rl.max_gen_batches`` generation batches, and an
   unfilled batch raises :class:`DynamicSamplingError` (``rl.on_unfilled = "error"``) or is
   masked (``"mask"``). The rollout is one jitted call (shared by demonstrations, RL and
   evaluation, so MJX compiles once), the refill loop runs on the host between calls (DAPO's
   ``max_num_gen_batches``), and the PPO update is one jitted call.

Evaluation decodes greedily on every scene and reports success per task.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

import harness
from flowrl.advantages import compute_advantages, outcome_to_token_rewards
from flowrl.losses import default_loss_config, get_loss, loss_names
from flowrl.sampling import group_keep_mask
from flowrl.types import AdvantageConfig, AdvantageInputs, AggMode, LossConfig, LossInputs
from harness import parallel
from ssm import lm
from vla import envs, policy
from vla.analysis import behaviour_stats, plot_trajectories, save_gif
from vla.rollout import Rollout, RolloutConfig, rollout
from vla.tokens import ActionBounds, action_to_bin, bounds_from_actions

Array = jax.Array

SFT_DEMOS = ("one", "all")
CANDIDATES = 2  # candidate initial states drawn per kept one (the expert must solve it)
ON_UNFILLED = ("error", "mask")


class DynamicSamplingError(RuntimeError):
    """Dynamic sampling could not fill the train batch within ``rl.max_gen_batches``."""


class TrainState(struct.PyTreeNode):
    """Per-seed training state (leaves carry a leading seed axis in a run).

    ``sft_params`` is a copy of the parameters at the end of SFT (the "before RL" policy)."""

    params: Any
    sft_params: Any
    sft_opt: Any
    rl_opt: Any
    key: Array
    step: Array


class Setup(NamedTuple):
    """Host-side constants of a run: the model, scenes, demonstrations and SFT weights."""

    model: lm.LM
    rcfg: RolloutConfig
    task_names: tuple[str, ...]
    table: envs.Scene  # candidate initial states, leaves [T * CANDIDATES * per_task, ...]
    scene_idx: np.ndarray  # i32[T * per_task] the scenes of the run (task-major) in ``table``
    bounds: ActionBounds
    demos: Rollout  # expert episodes of every scene, bins under ``bounds``
    sft_weight: Array  # f32[T * per_task]: 1 for the demonstrations SFT trains on
    run: Any  # the jitted rollout of :func:`make_rollout_fn`


def validate_config(config) -> None:
    """Raises :class:`harness.ConfigError` naming the field, before anything compiles."""
    tasks = tuple(config.env.tasks)
    if not tasks:
        raise harness.ConfigError("config.env.tasks must name at least one task")
    for i, name in enumerate(tasks):
        envs.TASKS.get(name, field=f"env.tasks[{i}]")
    harness.check_int(config, "env.per_task", 1)
    harness.check_range(config, "env.radius", 0.0, 0.5, lo_inclusive=False)
    harness.check_int(config, "policy.chunk", 1, 16)
    harness.check_int(config, "policy.obs_bins", 2, 1024)
    harness.check_choice(config, "model.layer", lm.layer_names())
    harness.check_int(config, "model.d_model", 1)
    harness.check_int(config, "model.n_layers", 1)
    harness.check_int(config, "num_seeds", 1)
    harness.check_choice(config, "sft.demos", SFT_DEMOS)
    harness.check_int(config, "sft.num_updates", 1)
    harness.check_int(config, "sft.steps_per_update", 1)
    harness.check_range(config, "sft.lr", 0.0, lo_inclusive=False)
    harness.check_int(config, "rl.num_updates", 0)
    harness.check_int(config, "rl.group_size", 2)
    harness.check_int(config, "rl.gen_groups", 1, len(tasks) * config.env.per_task)
    harness.check_int(config, "rl.train_groups", 1, config.rl.gen_groups)
    harness.check_int(config, "rl.max_gen_batches", 1)
    harness.check_int(config, "rl.num_minibatches", 1, config.rl.train_groups)
    if config.rl.train_groups % config.rl.num_minibatches:
        raise harness.ConfigError(
            f"config.rl.num_minibatches={config.rl.num_minibatches} must divide "
            f"rl.train_groups={config.rl.train_groups}"
        )
    harness.check_choice(config, "rl.advantage", ("grpo", "dr_grpo", "rloo"))
    harness.check_choice(config, "rl.agg_mode", [m.value for m in AggMode])
    harness.check_range(config, "rl.temperature", 0.0, lo_inclusive=False)
    harness.check_range(config, "rl.lr", 0.0, lo_inclusive=False)
    harness.check_range(config, "rl.clip_low", 0.0, 1.0)
    harness.check_range(config, "rl.clip_high", 0.0)
    harness.check_range(config, "rl.min_accuracy", 0.0, 1.0)
    harness.check_range(config, "rl.max_accuracy", config.rl.min_accuracy, 1.0)
    harness.check_choice(config, "rl.loss", loss_names())
    harness.check_choice(config, "rl.on_unfilled", ON_UNFILLED)
    harness.check_choice(config, "rl.dynamic_sampling", (True, False))
    harness.check_int(config, "train.eval_every", 0)
    harness.check_int(config, "train.checkpoint_every", 1)
    parallel.check_one_device(config, "VLA")


def rollout_config(config) -> RolloutConfig:
    cap = envs.max_steps(tuple(config.env.tasks))
    chunk = int(config.policy.chunk)
    return RolloutConfig(chunk, -(-cap // chunk), int(config.policy.obs_bins), config.env.radius)


def _expert_bounds() -> ActionBounds:
    return ActionBounds(-jnp.ones(envs.ACTION_DIM), jnp.ones(envs.ACTION_DIM))


def batch_size(config) -> int:
    """Episodes per seed in every rollout call (one compiled shape for RL, evaluation, demos)."""
    return int(config.rl.gen_groups) * int(config.rl.group_size)


@functools.lru_cache(maxsize=8)
def make_rollout_fn(
    model_config: lm.LMConfig, rcfg: RolloutConfig, tasks: tuple[str, ...], count: int, seed: int
):
    """One jitted rollout shared by demonstrations, RL and evaluation (a single MJX compile;
    cached, so runs with the same model, tasks and scenes in one process share it).

    Returns ``(table, run)``: the candidate scene table ``envs.make_scenes(tasks, count, seed)``
    and ``run(params [S, ...], bounds, scene_idx i32[S, R], keys [S], temperature f32[],
    use_expert bool[]) -> Rollout`` with leaves [S, R, ...], ``scene_idx`` indexing ``table``.
    """
    model = lm.LM(model_config)
    table = envs.make_scenes(tasks, count, seed)

    def one(params, bounds, idx, key, temperature, use_expert):
        scenes = jax.tree.map(lambda x: x[idx], table)
        return rollout(model, params, bounds, scenes, key, temperature, use_expert, rcfg)

    return table, jax.jit(jax.vmap(one, in_axes=(0, None, 0, 0, None, None)))


def run_scenes(run, params, bounds, idx: np.ndarray, key, temperature, use_expert, size: int):
    """Rolls out every scene of ``idx`` i32[N] once per seed, in calls of ``size`` episodes
    (the last padded with repeats); returns a Rollout with leaves [S, N, ...]."""
    seeds = jax.tree.leaves(params)[0].shape[0]
    n = len(idx)
    padded = np.resize(idx, -(-n // size) * size).reshape(-1, size)
    outs = []
    for i, row in enumerate(padded):
        keys = jax.random.split(jax.random.fold_in(key, i), seeds)
        ids = jnp.broadcast_to(jnp.asarray(row, jnp.int32), (seeds, size))
        outs.append(run(params, bounds, ids, keys, jnp.float32(temperature), jnp.bool_(use_expert)))
    return jax.tree.map(lambda *x: jnp.concatenate(x, axis=1)[:, :n], *outs)


def _solved_scenes(config, run, params, size: int) -> tuple[np.ndarray, Rollout]:
    """Indices into the candidate table of ``per_task`` expert-solved initial states per task
    (the first ones in order), and the expert's episodes on them (seed 0's copy)."""
    per_task, n_tasks = int(config.env.per_task), len(config.env.tasks)
    cand = np.arange(n_tasks * CANDIDATES * per_task)
    demos = run_scenes(run, params, _expert_bounds(), cand, jax.random.PRNGKey(0), 1.0, True, size)
    demos = jax.tree.map(lambda x: x[0], demos)
    ok = np.asarray(demos.success).reshape(n_tasks, -1) > 0
    if (ok.sum(axis=1) < per_task).any():
        raise RuntimeError(f"the scripted expert solves only {ok.sum(axis=1)} initial states")
    idx = np.concatenate(
        [t * CANDIDATES * per_task + np.flatnonzero(row)[:per_task] for t, row in enumerate(ok)]
    )
    return idx, jax.tree.map(lambda x: x[idx], demos)


def build_setup(config) -> Setup:
    """Scenes, expert demonstrations, q01/q99 bounds and the SFT weights (host side)."""
    rcfg = rollout_config(config)
    model = policy.make_model(config.model, rcfg.obs_bins, rcfg.chunk)
    tasks, per_task = tuple(config.env.tasks), int(config.env.per_task)
    table, run = make_rollout_fn(
        model.config, rcfg, tasks, CANDIDATES * per_task, int(config.env.scene_seed)
    )
    params = jax.eval_shape(make_init(config, model, rcfg), jax.random.PRNGKey(0)).params
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
    idx, demos = _solved_scenes(config, run, params, batch_size(config))
    steps = jnp.repeat(demos.chunk_mask, rcfg.chunk, axis=1)
    # Dataset statistics over every demonstration (the action space's q01/q99, both SFT arms).
    bounds = bounds_from_actions(np.asarray(demos.actions), np.asarray(steps))
    b, c = demos.chunk_mask.shape
    demos = demos._replace(bins=action_to_bin(demos.actions, bounds).reshape(b, c, -1))
    first = (np.arange(b) % per_task) == 0
    weight = np.ones(b) if config.sft.demos == "all" else first.astype(np.float64)
    return Setup(
        model, rcfg, tasks, table, idx, bounds, demos, jnp.asarray(weight, jnp.float32), run
    )


def _optimizer(lr: float) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))


def make_init(config, model: lm.LM, rcfg: RolloutConfig):
    """``key -> TrainState`` with a leading seed axis of size ``num_seeds``."""
    sft_tx, rl_tx = _optimizer(config.sft.lr), _optimizer(config.rl.lr)

    def init_one(key: Array) -> TrainState:
        k_param, k_run = jax.random.split(key)
        params = policy.init_params(model, k_param, rcfg.chunk)
        return TrainState(
            params, params, sft_tx.init(params), rl_tx.init(params), k_run, jnp.zeros((), jnp.int32)
        )

    return lambda key: jax.vmap(init_one)(jax.random.split(key, config.num_seeds))


def _flat_tokens(ro: Rollout) -> tuple[Array, Array, Array]:
    """Rollout leaves [B, C, ...] -> (prompts i32[B*C, L], bins i32[B*C, A], mask f32[B, C*A])."""
    b, c, a = ro.bins.shape
    mask = jnp.repeat(ro.chunk_mask, a, axis=1)
    return ro.prompts.reshape(b * c, -1), ro.bins.reshape(b * c, a), mask


def make_sft_update(config, setup: Setup):
    """Jitted ``state -> (state, metrics)``: ``sft.steps_per_update`` full-batch NLL steps on the
    weighted demonstration chunks (registry loss ``sft``, token-mean), vmapped over seeds."""
    tx = _optimizer(config.sft.lr)
    prompts, bins, mask = _flat_tokens(setup.demos)
    mask = mask * setup.sft_weight[:, None]
    b = mask.shape[0]
    loss_fn, loss_cfg = get_loss("sft"), default_loss_config("sft")
    chunk = setup.rcfg.chunk

    def loss(params):
        logp = policy.chunk_logp(setup.model, params, prompts, bins, 1.0, chunk).reshape(b, -1)
        return loss_fn(LossInputs(logp, mask, jnp.zeros_like(logp)), loss_cfg)

    def one_step(carry, _):
        params, opt = carry
        (value, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt = tx.update(grads, opt, params)
        return (optax.apply_updates(params, updates), opt), value

    def update_one(state: TrainState):
        (params, opt), losses = jax.lax.scan(
            one_step, (state.params, state.sft_opt), None, length=config.sft.steps_per_update
        )
        state = state.replace(params=params, sft_params=params, sft_opt=opt, step=state.step + 1)
        return state, {"sft/nll": losses[-1]}

    return jax.jit(jax.vmap(update_one))


def rl_loss_config(config) -> LossConfig:
    """The registry loss's published config with the run's clip range, no KL and no dual clip
    (SimpleVLA-RL: clip [0.8, 1.28], kl_coef 0, seq-mean-token-mean)."""
    return default_loss_config(
        config.rl.loss,
        clip_low=config.rl.clip_low,
        clip_high=config.rl.clip_high,
        dual_clip=None,
        kl_coef=0.0,
        agg_mode=config.rl.agg_mode,
    )


class RLBatch(NamedTuple):
    """Train batch of one seed: G groups of n episodes flattened to B = G * n rows.

    ``rollout`` leaves [B, ...]; ``group_ids`` i32[B]; ``valid`` f32[B] (0: unfilled slot)."""

    rollout: Rollout
    group_ids: Array
    valid: Array


def rl_token_inputs(config, batch: RLBatch) -> tuple[Array, Array, Array, Array, Array]:
    """(prompts, bins, mask f32[B, C*A], advantages f32[B, C*A], old_logp f32[B, C*A]): the GRPO
    outcome advantage broadcast to every action token up to the finishing chunk."""
    prompts, bins, mask = _flat_tokens(batch.rollout)
    mask = mask * batch.valid[:, None]
    rewards = outcome_to_token_rewards(batch.rollout.success, mask)
    adv_in = AdvantageInputs(rewards, mask, batch.group_ids, seq_valid=batch.valid)
    adv = compute_advantages(config.rl.advantage, adv_in, AdvantageConfig()).advantages
    old = batch.rollout.logp.reshape(mask.shape)
    return prompts, bins, mask, adv, old


def make_rl_update(config, setup: Setup):
    """Jitted ``(state, batch) -> (state, metrics)``: one PPO epoch over ``rl.num_minibatches``
    minibatches of whole episodes with the registry loss ``rl.loss``, vmapped over seeds."""
    tx, loss_fn, loss_cfg = (
        _optimizer(config.rl.lr),
        get_loss(config.rl.loss),
        rl_loss_config(config),
    )
    temperature, chunk, m = (
        float(config.rl.temperature),
        setup.rcfg.chunk,
        config.rl.num_minibatches,
    )

    def loss(params, prompts, bins, mask, adv, old):
        logp = policy.chunk_logp(setup.model, params, prompts, bins, temperature, chunk)
        return loss_fn(LossInputs(logp.reshape(mask.shape), mask, adv, old_logp=old), loss_cfg)

    def update_one(state: TrainState, batch: RLBatch):
        prompts, bins, mask, adv, old = rl_token_inputs(config, batch)
        b = mask.shape[0]
        key, k_perm = jax.random.split(state.key)
        perm = jax.random.permutation(k_perm, b).reshape(m, b // m)
        c = prompts.shape[0] // b

        def mb_step(carry, rows):
            params, opt = carry
            tok = (rows[:, None] * c + jnp.arange(c)).reshape(-1)
            args = (prompts[tok], bins[tok], mask[rows], adv[rows], old[rows])
            (_, metrics), grads = jax.value_and_grad(loss, has_aux=True)(params, *args)
            updates, opt = tx.update(grads, opt, params)
            return (optax.apply_updates(params, updates), opt), metrics

        (params, opt), metrics = jax.lax.scan(mb_step, (state.params, state.rl_opt), perm)
        metrics = {f"rl/{k}": jnp.mean(v) for k, v in metrics.items()}
        valid = batch.valid
        metrics["rl/batch_success"] = jnp.sum(batch.rollout.success * valid) / jnp.maximum(
            jnp.sum(valid), 1.0
        )
        metrics["rl/neg_logp"] = -jnp.sum(old * mask) / jnp.maximum(jnp.sum(mask), 1.0)
        state = state.replace(params=params, rl_opt=opt, key=key, step=state.step + 1)
        return state, metrics

    return jax.jit(jax.vmap(update_one))


def _round_rollouts(config, setup: Setup, state: TrainState, r: int) -> Rollout:
    """Generation batch ``r`` of every seed: ``rl.gen_groups`` distinct scenes x n episodes at the
    rollout temperature; leaves [S, P * n, ...]."""
    keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(state.key, jnp.uint32(r))
    k_sel, k_roll = jnp.swapaxes(jax.vmap(jax.random.split)(keys), 0, 1)
    n_scenes, p, n = len(setup.scene_idx), config.rl.gen_groups, config.rl.group_size
    groups = np.asarray(jax.vmap(lambda k: jax.random.permutation(k, n_scenes)[:p])(k_sel))
    idx = jnp.asarray(np.repeat(setup.scene_idx[groups], n, axis=-1), jnp.int32)
    temp, expert = jnp.float32(config.rl.temperature), jnp.bool_(False)
    return setup.run(state.params, setup.bounds, idx, k_roll, temp, expert)


def collect_batch(config, setup: Setup, state: TrainState) -> tuple[RLBatch, dict[str, Array]]:
    """Dynamic sampling with a bounded refill (DAPO; SimpleVLA-RL ``filter_accuracy``).

    Generation batches are drawn until every seed holds ``rl.train_groups`` groups whose success
    rate lies in [min_accuracy, max_accuracy] and is not all-equal (:func:`flowrl.sampling.
    group_keep_mask`; 1..7 of 8 with the defaults), or ``rl.max_gen_batches`` were drawn. Without
    dynamic sampling the first ``train_groups`` groups of one batch are kept unfiltered. Returns
    the batch (leaves [S, G * n, ...]) and sampling metrics f32[S].
    """
    ds, g, n = config.rl.dynamic_sampling, config.rl.train_groups, config.rl.group_size
    seeds = state.step.shape[0]
    chosen: list[list[tuple[int, int]]] = [[] for _ in range(seeds)]
    rounds, gen_success = [], []
    for r in range(config.rl.max_gen_batches if ds else 1):
        ro = jax.tree.map(np.asarray, _round_rollouts(config, setup, state, r))
        rounds.append(ro)
        scores = ro.success.reshape(seeds, -1, n)
        gen_success.append(scores.mean(axis=(1, 2)))
        keep = group_keep_mask(scores, config.rl.min_accuracy, config.rl.max_accuracy)
        keep = np.asarray(keep) if ds else np.ones(scores.shape[:2], bool)
        for s in range(seeds):
            free = g - len(chosen[s])
            chosen[s] += [(r, int(q)) for q in np.flatnonzero(keep[s])[:free]]
        if all(len(c) == g for c in chosen):
            break
    filled = np.array([len(c) for c in chosen], np.float32)
    rows = [c + [(0, 0)] * (g - len(c)) for c in chosen]
    sel = np.array([[(s, r, q) for r, q in row] for s, row in enumerate(rows)])  # [S, G, 3]

    def gather(*leaves):
        x = np.stack(leaves)  # [R, S, P * n, ...]
        x = x.reshape(x.shape[0], seeds, -1, n, *x.shape[3:])
        return jnp.asarray(
            x[sel[..., 1], sel[..., 0], sel[..., 2]].reshape(seeds, g * n, *x.shape[4:])
        )

    valid = (np.arange(g)[None, :] < filled[:, None]).astype(np.float32)
    batch = RLBatch(
        jax.tree.map(gather, *rounds),
        jnp.broadcast_to(jnp.repeat(jnp.arange(g, dtype=jnp.int32), n), (seeds, g * n)),
        jnp.asarray(np.repeat(valid, n, axis=1)),
    )
    metrics = {
        "ds/filled": jnp.asarray(filled / g),
        "ds/num_batches": jnp.full((seeds,), float(len(rounds))),
        "ds/gen_success": jnp.asarray(np.mean(gen_success, axis=0)),
    }
    return batch, metrics


def greedy_rollouts(setup, params, config):
    """Greedy (T = 0) closed-loop rollouts of ``params`` from every evaluation scene."""
    return run_scenes(
        setup.run,
        params,
        setup.bounds,
        setup.scene_idx,
        jax.random.PRNGKey(0),
        0.0,
        False,
        batch_size(config),
    )


def make_evaluate(config, setup: Setup):
    """``state -> metrics``: greedy success per task over every scene, f32[S] each."""
    n_tasks, per_task = len(setup.task_names), int(config.env.per_task)

    def evaluate(state: TrainState, params_field: str = "params") -> dict[str, Array]:
        params = getattr(state, params_field)
        ro = greedy_rollouts(setup, params, config)
        succ = ro.success.reshape(-1, n_tasks, per_task).mean(-1)
        out = {f"eval/success/{name}": succ[:, i] for i, name in enumerate(setup.task_names)}
        out["eval/success_mean"] = succ.mean(-1)
        return out

    return evaluate


class Trainer(NamedTuple):
    """What :func:`make_train` assembles: ``init(key)``, ``update(state)`` (SFT for the first
    ``sft.num_updates`` calls, RL after), ``evaluate(state)`` and the host-side setup."""

    init: Any
    update: Any
    evaluate: Any
    setup: Setup
    num_updates: int


def make_train(config) -> Trainer:
    """Validated config -> :class:`Trainer` (builds scenes and demonstrations; compiles lazily)."""
    validate_config(config)
    setup = build_setup(config)
    sft_update = make_sft_update(config, setup)
    rl_update = make_rl_update(config, setup)
    n_sft = int(config.sft.num_updates)

    def update(state: TrainState):
        if int(state.step[0]) < n_sft:
            return sft_update(state)
        batch, ds_metrics = collect_batch(config, setup, state)
        filled = np.asarray(ds_metrics["ds/filled"])
        if config.rl.on_unfilled == "error" and (filled < 1.0).any():
            raise DynamicSamplingError(
                f"dynamic sampling filled only {filled.min():.0%} of rl.train_groups="
                f"{config.rl.train_groups} after rl.max_gen_batches={config.rl.max_gen_batches} "
                "generation batches (too few groups with mixed success); raise "
                "rl.max_gen_batches or set rl.on_unfilled='mask'"
            )
        state, metrics = rl_update(state, batch)
        return state, {**metrics, **ds_metrics}

    init = make_init(config, setup.model, setup.rcfg)
    total = n_sft + int(config.rl.num_updates)
    return Trainer(init, update, make_evaluate(config, setup), setup, total)


def _per_seed_report(config, trainer: Trainer, state: TrainState, workdir: str) -> dict:
    """Per-seed greedy success of the SFT and final policies, behaviour statistics and pictures
    (``analysis.json``, ``trajectories.png``, ``rollout.gif`` in ``workdir``)."""
    setup = trainer.setup
    scenes = jax.tree.map(lambda x: x[setup.scene_idx], setup.table)
    report = {"seeds": int(config.num_seeds), "tasks": list(setup.task_names)}
    sets = {"demo": setup.demos}
    for field, label in (("sft_params", "sft"), ("params", "final")):
        params = getattr(state, field)
        ro = greedy_rollouts(setup, params, config)
        ro = jax.tree.map(np.asarray, ro)
        report[f"{label}_success"] = {
            name: ro.success.reshape(ro.success.shape[0], len(setup.task_names), -1)[:, i]
            .mean(-1)
            .tolist()
            for i, name in enumerate(setup.task_names)
        }
        seeds_stats = [
            behaviour_stats(
                jax.tree.map(lambda x, s=s: x[s], ro),
                scenes,
                setup.task_names,
                int(config.env.per_task),
            )
            for s in range(ro.success.shape[0])
        ]
        report[f"{label}_behaviour"] = seeds_stats
        sets[label] = jax.tree.map(lambda x: x[0], ro)
    report["demo_behaviour"] = behaviour_stats(
        setup.demos, scenes, setup.task_names, int(config.env.per_task)
    )
    per_task = int(config.env.per_task)
    rows = [t * per_task + min(1, per_task - 1) for t in range(len(setup.task_names))]
    plot_trajectories(
        os.path.join(workdir, "trajectories.png"), scenes, sets, rows, list(setup.task_names)
    )
    save_gif(
        os.path.join(workdir, "rollout.gif"),
        scenes,
        {k: sets[k] for k in ("demo", "sft", "final")},
        rows[-1],
    )
    with open(os.path.join(workdir, "analysis.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Validates ``config``, claims ``workdir``, runs SFT then RL through
    :func:`harness.run_experiment`, and writes the per-seed report; returns the summary."""
    validate_config(config)
    harness.claim_workdir(config, workdir)
    trainer = make_train(config)
    tasks = trainer.setup.task_names
    eval_every = int(config.train.eval_every) or None
    summary = harness.run_experiment(
        config,
        workdir,
        init=trainer.init,
        update=trainer.update,
        num_updates=trainer.num_updates,
        seed=int(config.seed),
        checkpoint_every=int(config.train.checkpoint_every),
        evaluate=trainer.evaluate,
        eval_every=eval_every,
        plots={
            "success.png": harness.Plot(
                ["eval/success_mean", *(f"eval/success/{t}" for t in tasks)],
                "greedy success per task (SFT updates first, then RL)",
                "success rate",
            ),
            "rl.png": harness.Plot(
                ["ds/gen_success", "ds/filled", "rl/pg_clipfrac"], "RL rollouts", "fraction"
            ),
        },
        desc="vla",
        progress=bool(config.progress),
        headline=["eval/success_mean", *(f"eval/success/{t}" for t in tasks)],
        x_label="update (SFT updates, then one RL iteration each)",
    )
    like = jax.eval_shape(trainer.init, jax.random.PRNGKey(int(config.seed)))
    state, _ = harness.load_state(workdir, like)
    summary["analysis"] = _per_seed_report(config, trainer, state, workdir)
    return summary
