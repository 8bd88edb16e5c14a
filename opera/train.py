"""OPERA experiment assembly: config checks, SFT phase, one run per arm, evaluation.

``train_and_evaluate(config, workdir)`` writes

* ``workdir/sft_multi`` and ``workdir/sft_single``: the SFT warm starts (harness run loop;
  the ``sft`` arm's result is ``sft_multi``'s final evaluation);
* ``workdir/<arm>``: one harness run per RL arm, started from the matching SFT checkpoint.

Arms (:data:`ARMS`): ``mapgrpo`` (plan -> analysis -> rewrite stages, gold injection),
``no_gold`` (no gold-plan injection), ``no_rewrite`` (no rewrite agent: stage 3's budget goes to
stage 2 and the executor never rewrites), ``single`` (one LM for all roles, end-to-end GRPO on
EM, the same number of updates, prompts and group size), ``sft`` (no RL).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

import harness
from flowrl.losses import default_loss_config, loss_names
from harness import parallel
from opera import agents as ag
from opera import mapgrpo, retrieval, sft
from opera import rewards as rw
from opera.world import MAX_HOPS, MIN_HOPS, WorldConfig, make_world
from ssm import lm


class ArmSpec(NamedTuple):
    """stages: role names in order (``single`` = the shared-LM baseline), ``None`` = no RL;
    budget: the share of the RL budget ``(n1, n2, n3)`` each stage gets, as index tuples."""

    stages: tuple[str, ...]
    budget: tuple[tuple[int, ...], ...]
    gold_injection: bool = True
    use_rewrite: bool = True

    @property
    def shared(self) -> bool:
        return self.stages == ("single",)


ARMS: harness.Registry = harness.Registry("arm")
ARMS.add("sft", ArmSpec((), ()))
ARMS.add("mapgrpo", ArmSpec(("plan", "analysis", "rewrite"), ((0,), (1,), (2,))))
ARMS.add("no_gold", ArmSpec(("plan", "analysis", "rewrite"), ((0,), (1,), (2,)), False))
ARMS.add("no_rewrite", ArmSpec(("plan", "analysis"), ((0,), (1, 2)), True, False))
ARMS.add("single", ArmSpec(("single",), ((0, 1, 2),)))


def arm_list(config) -> list[str]:
    return [a.strip() for a in str(config.arms).split(",") if a.strip()]


def validate(config) -> None:
    """Raises :class:`harness.ConfigError` naming the field, before anything compiles."""
    for arm in arm_list(config):
        if arm not in ARMS:
            raise harness.ConfigError(f"config.arms contains {arm!r}; choose from {ARMS.names()}")
    harness.check_choice(config, "retriever", retrieval.RETRIEVERS.names())
    harness.check_choice(config, "model.layer", lm.layer_names())
    harness.check_choice(config, "rl.loss", loss_names())
    for f in ("model.d_model", "model.n_layers", "sft.steps_per_update", "sft.batch_size",
              "rl.prompts_per_step", "rl.refresh_every", "eval_every", "checkpoint_every",
              "exec.top_k", "world.n_train_questions", "world.n_test_questions"):  # fmt: skip
        harness.check_int(config, f, lo=1)
    harness.check_int(config, "sft.updates", lo=1)
    harness.check_int(config, "rl.group_size", lo=2)
    harness.check_int(config, "exec.max_rewrites", lo=0, hi=3)
    harness.check_int(config, "world.n_first", lo=2)
    harness.check_int(config, "world.n_last", lo=2)
    harness.check_int(config, "world.n_relations", lo=1)
    harness.check_int(config, "world.facts_per_doc", lo=1, hi=2)
    n = list(config.rl.stage_updates)
    if len(n) != 3 or any(not isinstance(x, int) or x < 0 for x in n) or sum(n) < 1:
        raise harness.ConfigError(
            f"config.rl.stage_updates={n} must be 3 counts >= 0 (plan, analysis, rewrite), sum >= 1"
        )
    for f in ("rl.lr", "sft.lr", "rl.temperature"):
        harness.check_range(config, f, 0.0, None, lo_inclusive=False)
    for f in ("rl.kl_coef", "rl.w_ndcg", "rl.w_format"):
        harness.check_range(config, f, 0.0, None)
    harness.check_range(config, "world.alias_prob", 0.0, 1.0)
    harness.check_range(config, "world.heldout_frac", 0.0, 1.0, lo_inclusive=False,
                        hi_inclusive=False)  # fmt: skip
    parallel.check_one_device(config, "OPERA")


class Setup(NamedTuple):
    world: Any
    env: mapgrpo.Env
    test_questions: Any
    test_answers: Any
    test_hops: Any
    demos: sft.RoleDemos


def make_setup(config) -> Setup:
    world = make_world(int(config.world.seed), _world_config(config))
    retriever = retrieval.RETRIEVERS.get(config.retriever)(world, int(config.world.seed))
    model_cfg = dict(config.model.to_dict(), vocab_size=world.vocab.size)
    model = lm.make_model(model_cfg)
    ex = ag.ExecConfig(int(config.exec.top_k), int(config.exec.max_rewrites), True, 0.0)
    kb = rw.KB.of(world)
    env = mapgrpo.Env(model, retriever, world.vocab, kb, jnp.asarray(world.train.tokens),
                      jnp.asarray(world.train.plan), jnp.asarray(world.train.answer), ex)  # fmt: skip
    demos = sft.make_demos(world, retriever, ex.top_k)
    t = world.test
    return Setup(world, env, jnp.asarray(t.tokens), jnp.asarray(t.answer), jnp.asarray(t.hops),
                 demos)  # fmt: skip


def _world_config(config) -> WorldConfig:
    fields = {f.name for f in dataclasses.fields(WorldConfig)}
    return WorldConfig(**{k: v for k, v in config.world.to_dict().items() if k in fields})


_EVALUATORS: dict = {}


def make_evaluate(s: Setup, exec_cfg: ag.ExecConfig):
    """Jitted greedy evaluation on the held-out test questions: EM/F1 overall and by hop count,
    the plan reward and the mean number of rewrites (one compiled function per setup and
    executor config, shared by the arms)."""
    cache_key = (id(s.world), exec_cfg)
    if cache_key not in _EVALUATORS:  # the world is kept alive with it, so its id stays unique
        _EVALUATORS[cache_key] = (s.world, _evaluator(s, exec_cfg))
    return _EVALUATORS[cache_key][1]


def _evaluator(s: Setup, exec_cfg: ag.ExecConfig):
    env = s.env

    @jax.jit
    def run(params: ag.Agents):
        tr = ag.run_pipeline(env.model, params, env.retriever, env.kb.docs, env.vocab,
                             s.test_questions, jax.random.PRNGKey(0), exec_cfg)  # fmt: skip
        gold = jnp.stack(env.vocab.name(s.test_answers), -1)
        em, f1 = rw.answer_em_f1(tr.final, gold)
        w = s.world.test
        out = {"eval/em": em.mean(), "eval/f1": f1.mean()}
        for h in range(MIN_HOPS, MAX_HOPS + 1):
            sel = (s.test_hops == h).astype(jnp.float32)
            out[f"eval/em_hop{h}"] = (em * sel).sum() / sel.sum()
            out[f"eval/f1_hop{h}"] = (f1 * sel).sum() / sel.sum()
        gold_plan = jnp.asarray(w.plan)
        out["eval/plan_reward"] = rw.plan_reward(env.vocab, env.kb, tr.plan, gold_plan,
                                                 s.test_answers).mean()  # fmt: skip
        same = (tr.plan == gold_plan) | (ag.plan_mask(gold_plan) == 0)  # up to the gold EOS
        out["eval/plan_exact"] = jnp.all(same, -1).mean()
        out["eval/rewrites"] = tr.rew_valid.sum((1, 2)).mean()
        return out

    return lambda state: run(state.params)


def init_state(s: Setup, key, opt, shared: bool) -> mapgrpo.OperaState:
    keys = jax.random.split(key, 4)
    ps = [lm.init_params(s.env.model, k, 8) for k in keys[:3]]
    if shared:
        ps = [ps[0]] * 3
    params = ag.Agents(*ps)
    opt_state = ag.Agents(*(opt.init(p) for p in ps))
    return mapgrpo.OperaState(params, opt_state, params, keys[3], jnp.zeros((), jnp.int32))


def _optimizer(lr: float) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))


def run_sft(config, s: Setup, workdir: str, shared: bool) -> dict:
    """The SFT warm start as a harness run (resumable); returns its summary."""
    opt = _optimizer(float(config.sft.lr))
    update = sft.make_sft_update(s.env.model, s.demos, opt, int(config.sft.batch_size),
                                 int(config.sft.steps_per_update), shared)  # fmt: skip
    return harness.run_experiment(
        config, workdir, init=lambda k: init_state(s, k, opt, shared), update=update,
        num_updates=int(config.sft.updates), seed=int(config.seed),
        checkpoint_every=int(config.checkpoint_every),
        evaluate=make_evaluate(s, s.env.exec_cfg), eval_every=int(config.eval_every),
        desc=f"sft_{'single' if shared else 'multi'}", progress=bool(config.progress),
    )  # fmt: skip


def rl_config(config, spec: ArmSpec) -> mapgrpo.RLConfig:
    rl = config.rl
    loss_cfg = default_loss_config(rl.loss, kl_coef=float(rl.kl_coef))
    return mapgrpo.RLConfig(rl.loss, loss_cfg, int(rl.prompts_per_step), int(rl.group_size),
                            float(rl.temperature), int(rl.refresh_every),
                            spec.gold_injection and bool(rl.gold_injection), float(rl.w_ndcg),
                            float(rl.w_format))  # fmt: skip


def stage_schedule(config, spec: ArmSpec) -> list[tuple[str, int]]:
    """[(stage, number of updates)] of an arm from ``rl.stage_updates``."""
    n = list(config.rl.stage_updates)
    return [(st, sum(n[i] for i in b)) for st, b in zip(spec.stages, spec.budget, strict=True)]


def run_arm(config, s: Setup, workdir: str, arm: str) -> dict:
    """One RL arm from its SFT checkpoint (``workdir/sft_*``) as a harness run."""
    spec = ARMS.get(arm)
    rl = rl_config(config, spec)
    opt = _optimizer(float(config.rl.lr))
    max_rw = int(config.exec.max_rewrites) if spec.use_rewrite else 0
    env = s.env._replace(exec_cfg=s.env.exec_cfg._replace(max_rewrites=max_rw))
    s = s._replace(env=env)
    sft_dir = os.path.join(workdir, "sft_single" if spec.shared else "sft_multi")
    schedule = stage_schedule(config, spec)
    updates = {st: (mapgrpo.make_single_update(env, rl, opt) if st == "single"
                    else mapgrpo.make_role_update(env, rl, opt, st)) for st, _ in schedule}  # fmt: skip
    bounds = [sum(n for _, n in schedule[: i + 1]) for i in range(len(schedule))]

    def init(key):
        like = init_state(s, key, _optimizer(float(config.sft.lr)), spec.shared)
        state, _ = harness.load_state(sft_dir, like)
        fresh = ag.Agents(*(opt.init(p) for p in state.params))
        return mapgrpo.OperaState(state.params, fresh, state.params, key, jnp.zeros((), jnp.int32))

    def update(state):
        t = int(state.step)  # host read: picks the stage's jitted update
        stage = next(st for (st, _), b in zip(schedule, bounds, strict=True) if t < b)
        return updates[stage](state)

    return harness.run_experiment(
        config, os.path.join(workdir, arm), init=init, update=update, num_updates=bounds[-1],
        seed=int(config.seed) + 1000, checkpoint_every=int(config.checkpoint_every),
        evaluate=make_evaluate(s, env.exec_cfg), eval_every=int(config.eval_every), desc=arm,
        progress=bool(config.progress),
    )  # fmt: skip


def train_and_evaluate(config, workdir: str) -> dict[str, dict]:
    """Runs every arm of ``config.arms``; returns {arm: final metrics} (also ``results.json``)."""
    validate(config)
    s = make_setup(config)
    arms = arm_list(config)
    results = {}
    needs_multi = any(not ARMS.get(a).shared for a in arms)
    if needs_multi:
        results["sft"] = run_sft(config, s, os.path.join(workdir, "sft_multi"), False)
    if "single" in arms:
        results["sft_single"] = run_sft(config, s, os.path.join(workdir, "sft_single"), True)
    for arm in arms:
        if arm != "sft":
            results[arm] = run_arm(config, s, workdir, arm)
    final = {a: r.get("final_metrics", {}) for a, r in results.items()}
    with open(os.path.join(workdir, "results.json"), "w") as f:
        json.dump(final, f, indent=2, sort_keys=True)
    return final
