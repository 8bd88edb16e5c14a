"""Coevolution of a policy and its wind tunnel: train, attack, remember failures, gate.

SAFETY_AND_ANALYSIS.md §1.6 (feature A3): R²AI's "continual feedback loops in which safety and
capability coevolve" (arXiv 2509.06786, abstract), with the ReSI-style Pareto gate (secondary
source) and a bounded failure bank ("immune memory"). Each round:

1. fine-tune the last accepted policy on a mixture of the training distribution and the failure
   bank's parameters (prioritised by severity);
2. run the wind tunnel on a fixed protocol (fixed keys, fixed ball) against the candidate;
3. insert its failures into the bank (deduplicated by scaled distance, capacity-bounded: a new
   failure replaces the least severe entry only if it is more severe);
4. **gate**: accept the candidate only if its worst-case return improves by at least
   ``min_improvement`` over the last accepted one **and** its nominal return falls by at most
   ``nominal_budget`` (and, optionally, its mean return on the bank's past failures falls by at
   most ``regression_tol``, the regression suite);
5. stop after ``patience`` consecutive rejections or ``max_rounds`` rounds.

The bank and gate are pure functions tested on fake metric streams; :func:`run` is the host loop,
generic in the training and evaluation callbacks.

With ``config.shield.enabled`` the policy trains shielded (§1.6 using §1.5): PPO's acting loop
runs every proposal through :func:`adarl.shield.make_action_filter`, whose verifier models are the
nominal dynamics plus the wind tunnel's current worst cases (the bank's ``num_worst`` most severe
failures; :func:`verifier_models`). The loop has no learned critic (Q_c = 0.5 everywhere), so
``tau < 0.5`` verifies every step and ``tau >= 0.5`` only every ``every`` steps.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import harness
from adarl import acting, dynamics, rnac, robust_eval, safety, sharding, shield, tasks, wrappers
from adarl import ppo as ppo_lib
from adarl import windtunnel as wt
from harness import checkpoint as harness_checkpoint

# ---------------------------------------------------------------------------------------------
# Failure bank
# ---------------------------------------------------------------------------------------------


class FailureBank(NamedTuple):
    """A fixed-capacity set of failure parameters (C slots, d parameters).

    params: f32 (C, d) physical parameters; severity: f32 (C,) ≥ 0 (return shortfall from the
    nominal return); seed: i32 (C,) evaluation seed that reproduces the failure; valid: bool (C,).
    """

    params: jax.Array
    severity: jax.Array
    seed: jax.Array
    valid: jax.Array


def bank_init(capacity: int, dim: int) -> FailureBank:
    if not isinstance(capacity, int) or capacity < 1:
        raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
    return FailureBank(
        jnp.zeros((capacity, dim)),
        jnp.zeros((capacity,)),
        jnp.zeros((capacity,), jnp.int32),
        jnp.zeros((capacity,), bool),
    )


def bank_insert(
    bank: FailureBank,
    params: jax.Array,
    severity: jax.Array,
    seed: jax.Array,
    *,
    scale: jax.Array,
    min_distance: float,
) -> FailureBank:
    """Inserts one failure (params f32 (d,)): a duplicate (within ``min_distance`` in scaled
    units of a valid entry) only raises that entry's severity; otherwise it fills a free slot, or
    replaces the least severe entry if it is more severe. Pure and jit-able."""
    dist = jnp.linalg.norm((bank.params - params) / scale, axis=-1)
    dist = jnp.where(bank.valid, dist, jnp.inf)
    nearest = jnp.argmin(dist)
    is_dup = dist[nearest] < min_distance
    free = jnp.argmin(bank.valid)  # first False slot (0 if all valid)
    has_free = ~bank.valid[free]
    weakest = jnp.argmin(jnp.where(bank.valid, bank.severity, jnp.inf))
    slot = jnp.where(has_free, free, weakest)
    replace = ~is_dup & (has_free | (severity > bank.severity[weakest]))

    dup_sev = bank.severity.at[nearest].max(severity)
    dup_seed = bank.seed.at[nearest].set(
        jnp.where(severity > bank.severity[nearest], seed, bank.seed[nearest])
    )
    new = FailureBank(
        params=jnp.where(replace, bank.params.at[slot].set(params), bank.params),
        severity=jnp.where(
            is_dup, dup_sev, jnp.where(replace, bank.severity.at[slot].set(severity), bank.severity)
        ),
        seed=jnp.where(
            is_dup, dup_seed, jnp.where(replace, bank.seed.at[slot].set(seed), bank.seed)
        ),
        valid=jnp.where(replace, bank.valid.at[slot].set(True), bank.valid),
    )
    return new


def bank_insert_many(bank, params, severity, seed, *, scale, min_distance) -> FailureBank:
    """Inserts failures params (n, d), severity (n,), seed (n,) in order (``lax.scan``)."""

    def body(b, item):
        p, s, sd = item
        return bank_insert(b, p, s, sd, scale=scale, min_distance=min_distance), None

    bank, _ = jax.lax.scan(
        body,
        bank,
        (jnp.asarray(params, jnp.float32), jnp.asarray(severity, jnp.float32),
         jnp.asarray(seed, jnp.int32)),
    )  # fmt: skip
    return bank


def bank_sample(bank: FailureBank, key: jax.Array, n: int, eps: float = 1e-3) -> jax.Array:
    """i32 (n,) indices of valid entries drawn with probability ∝ severity + eps (PLR-style)."""
    logits = jnp.where(bank.valid, jnp.log(bank.severity + eps), -jnp.inf)
    return jax.random.categorical(key, logits, shape=(n,))


def bank_size(bank: FailureBank) -> int:
    return int(np.sum(np.asarray(bank.valid)))


# ---------------------------------------------------------------------------------------------
# Gate
# ---------------------------------------------------------------------------------------------


class RoundMetrics(NamedTuple):
    """Evaluation of one checkpoint under the fixed protocol: nominal return, worst-case return
    found by the wind tunnel, and (optional) mean return on the bank's stored failures."""

    nominal: float
    worst: float
    bank_return: float | None = None


def gate(
    reference: RoundMetrics,
    candidate: RoundMetrics,
    *,
    min_improvement: float,
    nominal_budget: float,
    regression_tol: float | None = None,
    reference_bank_return: float | None = None,
) -> tuple[bool, str]:
    """Pareto gate: accept iff ``worst`` improves by ≥ ``min_improvement`` and ``nominal`` falls by
    ≤ ``nominal_budget`` (and the bank return falls by ≤ ``regression_tol`` against the reference
    evaluated on the same bank, when given). Returns (accepted, reason)."""
    if candidate.worst < reference.worst + min_improvement:
        return False, (
            f"worst case {candidate.worst:.4g} < reference {reference.worst:.4g} + "
            f"{min_improvement:g}"
        )
    if candidate.nominal < reference.nominal - nominal_budget:
        return False, (
            f"nominal {candidate.nominal:.4g} fell more than {nominal_budget:g} below "
            f"{reference.nominal:.4g}"
        )
    if regression_tol is not None and reference_bank_return is not None:
        cand = candidate.bank_return
        if cand is not None and cand < reference_bank_return - regression_tol:
            return False, (
                f"regression: return on past failures {cand:.4g} < {reference_bank_return:.4g} "
                f"- {regression_tol:g}"
            )
    return True, "accepted"


# ---------------------------------------------------------------------------------------------
# Loop
# ---------------------------------------------------------------------------------------------


class Attack(NamedTuple):
    """What the wind tunnel reports about a checkpoint: metrics and failures params (n, d),
    returns (n,), seeds (n,)."""

    metrics: RoundMetrics
    failure_params: np.ndarray
    failure_returns: np.ndarray
    failure_seeds: np.ndarray


class LoopState(NamedTuple):
    """Everything the loop needs to continue after ``next_round - 1`` finished rounds.

    state: last accepted policy state; bank: the failure bank; reference: metrics of the last
    accepted checkpoint; rejections: consecutive rejections so far; history: per-round dicts
    (round 0 = the initial attack); next_round: first round still to run (1-based).
    """

    state: Any
    bank: FailureBank
    reference: RoundMetrics
    rejections: int
    history: list
    next_round: int


def finished(loop: LoopState, max_rounds: int, patience: int) -> bool:
    """The loop has nothing left to do: all rounds ran, or ``patience`` rejections in a row."""
    return loop.next_round > max_rounds or loop.rejections >= patience


def run(
    state: Any,
    *,
    train_round: Callable[[Any, FailureBank, jax.Array], Any],
    attack: Callable[[Any, FailureBank], Attack],
    key: jax.Array,
    dim: int,
    scale: np.ndarray,
    capacity: int = 64,
    min_distance: float = 0.05,
    max_rounds: int = 3,
    patience: int = 2,
    min_improvement: float = 0.0,
    nominal_budget: float = 0.0,
    regression_tol: float | None = None,
    bank_return: Callable[[Any, FailureBank], float] | None = None,
    log: Callable[[dict[str, Any]], None] | None = None,
    resume: LoopState | None = None,
    on_round: Callable[[LoopState], None] | None = None,
) -> tuple[Any, FailureBank, list[dict[str, Any]]]:
    """The coevolution loop; returns (last accepted state, bank, per-round history).

    Args:
      state: initial (pre-trained) policy/training state (ignored with ``resume``).
      train_round: ``(state, bank, key) -> state`` fine-tunes on the bank-augmented dynamics.
      attack: ``(state, bank) -> Attack``, the wind tunnel on the fixed protocol.
      bank_return: optional ``(state, bank) -> float`` mean return on the bank's failures (the
        regression suite); used by the gate when ``regression_tol`` is set.
      resume: a :class:`LoopState` saved by ``on_round``; finished rounds are skipped and round r
        still uses the r-th split of ``key``, so a resumed loop equals an uninterrupted one.
      on_round: called with the :class:`LoopState` after the initial attack and every round
        (checkpointing).
    """
    scale_j = jnp.asarray(scale, jnp.float32)
    gate_kw = dict(min_improvement=min_improvement, nominal_budget=nominal_budget,
                   regression_tol=regression_tol)  # fmt: skip
    remember = functools.partial(_remember, scale=scale_j, min_distance=min_distance)
    if resume is None:
        bank = bank_init(capacity, dim)
        ref_attack = attack(state, bank)
        bank = remember(bank, ref_attack)
        first = {"round": 0, "accepted": True, "reason": "initial",
                 **ref_attack.metrics._asdict(), "bank_size": bank_size(bank)}  # fmt: skip
        loop = LoopState(state, bank, ref_attack.metrics, 0, [first], 1)
        if log:
            log(first)
        if on_round:
            on_round(loop)
    else:
        loop = resume
    keys = jax.random.split(key, max_rounds)
    while not finished(loop, max_rounds, patience):
        r = loop.next_round
        loop = _round(loop, keys[r - 1], train_round, attack, bank_return, remember, gate_kw)
        if log:
            log(loop.history[-1])
        if on_round:
            on_round(loop)
    return loop.state, loop.bank, loop.history


def _remember(bank: FailureBank, att: Attack, *, scale, min_distance) -> FailureBank:
    if len(att.failure_returns) == 0:
        return bank
    severity = np.maximum(att.metrics.nominal - np.asarray(att.failure_returns), 0.0)
    return bank_insert_many(
        bank, att.failure_params, severity, att.failure_seeds, scale=scale,
        min_distance=min_distance,
    )  # fmt: skip


def _round(loop: LoopState, key, train_round, attack, bank_return, remember, gate_kw):
    """One round: fine-tune, attack, remember, gate; returns the next :class:`LoopState`."""
    use_bank = bank_return is not None and gate_kw["regression_tol"] is not None
    candidate = train_round(loop.state, loop.bank, key)
    ref_bank = bank_return(loop.state, loop.bank) if use_bank else None
    att = attack(candidate, loop.bank)
    metrics = att.metrics
    if use_bank:
        metrics = metrics._replace(bank_return=bank_return(candidate, loop.bank))
    accepted, reason = gate(loop.reference, metrics, reference_bank_return=ref_bank, **gate_kw)
    bank = remember(loop.bank, att)
    entry = {"round": loop.next_round, "accepted": accepted, "reason": reason,
             **metrics._asdict(), "bank_size": bank_size(bank)}  # fmt: skip
    if accepted:
        state, reference, rejections = candidate, metrics, 0
    else:
        state, reference, rejections = loop.state, loop.reference, loop.rejections + 1
    return LoopState(state, bank, reference, rejections, [*loop.history, entry],
                     loop.next_round + 1)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Checkpoints: one orbax step per finished round, the rounds log beside it
# ---------------------------------------------------------------------------------------------

ROUNDS_FILE = "coevolve_rounds.jsonl"
RESULT_FILE = "coevolve.json"


def save_round(workdir: str, loop: LoopState) -> None:
    """Checkpoints ``loop`` as orbax step ``next_round - 1`` under ``workdir/checkpoints`` (the
    arrays: state, bank, rejections) and rewrites the rounds log ``coevolve_rounds.jsonl`` (one
    JSON line per finished round) atomically."""
    tree = {"state": loop.state, "bank": loop.bank._asdict(),
            "rejections": np.int32(loop.rejections)}  # fmt: skip
    mngr = harness_checkpoint.manager(workdir, keep=2)
    try:
        harness_checkpoint.save(mngr, loop.next_round - 1, tree)
        mngr.wait_until_finished()
    finally:
        mngr.close()
    tmp = os.path.join(workdir, ROUNDS_FILE + ".tmp")
    with open(tmp, "w") as f:
        for entry in loop.history:
            f.write(json.dumps(entry, default=float) + "\n")
    os.replace(tmp, os.path.join(workdir, ROUNDS_FILE))


def load_round(workdir: str, like_state: Any, like_bank: FailureBank) -> LoopState | None:
    """The newest checkpointed :class:`LoopState` of ``workdir`` (None if there is none); the
    history is the rounds log up to that round, the reference its last accepted entry."""
    if not os.path.isdir(harness_checkpoint.checkpoint_dir(workdir)):
        return None
    like = {"state": like_state, "bank": like_bank._asdict(), "rejections": np.int32(0)}
    try:
        tree, step = harness.load_state(workdir, like=like)
    except harness.CheckpointError:
        return None
    with open(os.path.join(workdir, ROUNDS_FILE)) as f:
        history = [json.loads(line) for line in f if line.strip()]
    history = [h for h in history if h["round"] <= step]
    if len(history) != step + 1:
        raise harness.CheckpointError(
            f"{ROUNDS_FILE} in {workdir} has {len(history)} rounds for checkpoint {step}"
        )
    last = [h for h in history if h["accepted"]][-1]
    reference = RoundMetrics(last["nominal"], last["worst"], last.get("bank_return"))
    return LoopState(tree["state"], FailureBank(**tree["bank"]), reference,
                     int(tree["rejections"]), history, step + 1)  # fmt: skip


def checkpointed_run(
    workdir: str, init_state: Callable[[], Any], like_state: Any, **run_kwargs: Any
):
    """:func:`run` that resumes from ``workdir``'s last finished round and checkpoints each one.

    ``init_state()`` (e.g. pre-training) is called only when nothing is checkpointed yet;
    ``like_state`` (arrays or ``jax.ShapeDtypeStruct``) is the restore template.
    """
    like_bank = bank_init(run_kwargs.get("capacity", 64), run_kwargs["dim"])
    like_state = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), like_state)
    resume = load_round(workdir, like_state, like_bank)
    if resume is not None:
        print(f"coevolve: resuming after round {resume.next_round - 1} from {workdir}")
    state = None if resume is not None else init_state()
    return run(state, resume=resume, on_round=functools.partial(save_round, workdir),
               **run_kwargs)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# PPO/RNAC in the loop (python -m experiments.coevolve)
# ---------------------------------------------------------------------------------------------


class Arena(NamedTuple):
    """What the PPO/RNAC co-evolution loop reads besides the policy state and the bank.

    config: the coevolve config; ppo_cfg: ``config.train.ppo`` with one learning-rate schedule
    over pre-training and all rounds; uset: the uncertainty set; train_env, spec; space: the
    wind tunnel's search space; full_return: return over full parameter vectors (n, d);
    return_fn: over the searched subspace; ball; eval_keys (episodes, 2).
    """

    config: Any
    ppo_cfg: Any
    uset: Any
    train_env: Any
    spec: Any
    space: Any
    full_return: Callable
    return_fn: Callable
    ball: Any
    eval_keys: jax.Array
    mesh: Any = None  # config.parallel's mesh (coevolve_mesh), shared by training and attacks


def validate_config(config: Any) -> None:
    """ConfigError naming the field, before anything compiles."""
    tc = config.train
    prefixed(rnac.validate_config, tc, "train")
    if tc.num_seeds != 1:
        raise harness.ConfigError(f"config.train.num_seeds={tc.num_seeds} must be 1 here")
    for field in ("pretrain_updates", "round_updates", "max_rounds", "patience"):
        harness.check_int(config, field, lo=1)
    harness.check_int(config, "bank.capacity", lo=1)
    harness.check_range(config, "sampler.p_adv", lo=0.0, hi=1.0)
    prefixed(wt.validate_config, config.windtunnel, "windtunnel")
    if config.get("shield") is not None and config.shield.enabled:
        harness.check_choice(config, "shield.constraint", safety.CONSTRAINTS.names())
        for field in ("horizon", "num_candidates", "num_worst"):
            harness.check_int(config, f"shield.{field}", lo=1)
        harness.check_int(config, "shield.num_candidates", lo=2)
        harness.check_int(config, "shield.every", lo=0)
        harness.check_range(config, "shield.tau", lo=0.0, hi=1.0)
    coevolve_mesh(config)


def coevolve_mesh(config: Any):
    """One mesh (``config.parallel``) for PPO/RNAC training and wind-tunnel attacks, with the
    divisibility both need (:func:`adarl.rnac.ppo_mesh`, :func:`adarl.windtunnel.windtunnel_mesh`)."""
    fields = {f"train.ppo.{f}": config.train.ppo[f] for f in ("num_envs", "minibatch_size")}
    fields["windtunnel.episodes"] = config.windtunnel.episodes
    return sharding.trainer_mesh(config, fields, "co-evolution (adarl.coevolve)")


def prefixed(validate: Callable[[Any], None], sub_config: Any, path: str) -> None:
    """Runs a sub-config's validator and re-raises its ConfigError with the full dotted field
    (``config.algo`` -> ``config.train.algo``)."""
    try:
        validate(sub_config)
    except ValueError as err:  # ConfigError, or a ValueError from a registry or ball check
        msg = str(err).replace("config.", f"config.{path}.")
        if f"config.{path}." not in msg:
            msg = f"config.{path}: {msg}"
        raise harness.ConfigError(msg) from None


def make_arena(config: Any) -> tuple[Arena, ppo_lib.PPOFns]:
    tc, wc = config.train, config.windtunnel
    total = config.pretrain_updates + config.max_rounds * config.round_updates
    ppo_cfg = ml_collections.ConfigDict(tc.ppo.to_dict())
    ppo_cfg.num_updates = total  # one learning-rate schedule over pre-training and all rounds
    task = tasks.make_task(tc)
    uset = rnac.get_uncertainty(tc.algo, tc.rnac)
    mesh = coevolve_mesh(config)
    empty = bank_init(config.bank.capacity, task.spec.dim)
    filt = shield_filter(config, task.train_env, task.spec, empty)
    fns = ppo_lib.make_ppo(ppo_cfg, task.train_env, uset, mesh, action_filter=filt)
    full_return = robust_eval.make_return_fn(
        task.eval_env, task.spec, fns.apply, robust_eval.num_steps(tc)
    )
    space = wt.space_from_spec(task.spec, tuple(wc.params) or None)
    arena = Arena(
        config=config,
        ppo_cfg=ppo_cfg,
        uset=uset,
        train_env=task.train_env,
        spec=task.spec,
        space=space,
        full_return=full_return,
        return_fn=wt.subspace_return_fn(full_return, task.spec, space.names),
        ball=wt.make_ball(wc.ball, space, wc.radius),
        eval_keys=jax.random.split(jax.random.PRNGKey(wc.eval_seed), wc.episodes),
        mesh=mesh,
    )
    return arena, fns


def verifier_models(spec: Any, bank: FailureBank, num_worst: int) -> np.ndarray:
    """f32 (1 + num_worst, d): the nominal θ, then the bank's valid entries by decreasing
    severity (the wind tunnel's current worst cases); missing ones repeat the nominal θ."""
    nominal = np.asarray(spec.nominal, np.float32)
    valid = np.asarray(bank.valid)
    order = np.argsort(-np.where(valid, np.asarray(bank.severity), -np.inf), kind="stable")
    worst = [np.asarray(bank.params)[i] for i in order[:num_worst] if valid[i]]
    worst += [nominal] * (num_worst - len(worst))
    return np.stack([nominal, *worst]).astype(np.float32)


def shield_filter(config: Any, env: Any, spec: Any, bank: FailureBank) -> acting.ActionFilter:
    """PPO's action filter: the identity, or with ``config.shield.enabled`` the shield whose
    verifier steps ``env`` (a :func:`adarl.wrappers.wrap` env) under :func:`verifier_models`."""
    sc = config.get("shield")
    if sc is None or not sc.enabled:
        return acting.identity_filter
    system = shield.mjx_system(env.env, spec, env.action_repeat)
    constraint = safety.make_constraint(
        sc.constraint, action_size=int(env.action_size), **dict(sc.constraint_kwargs)
    )
    cfg = shield.ShieldConfig(sc.horizon, sc.num_candidates, sc.noise, num_steps=1)
    knobs = shield.Knobs(jnp.float32(sc.tau), jnp.int32(sc.every))
    thetas = jnp.asarray(verifier_models(spec, bank, sc.num_worst))
    return shield.make_action_filter(system, constraint, cfg, thetas, knobs)


def policy_params(state: Any) -> Any:
    """``(actor_params, obs_stats)`` of a single PPO state with a leading seed axis of 1."""
    return jax.tree.map(lambda x: x[None], (state.actor_params, state.obs_stats))


def attack(arena: Arena, state: Any, bank: FailureBank) -> Attack:
    """Wind-tunnel search of the current policy; failures as full parameter vectors."""
    del bank
    wc, spec, names = arena.config.windtunnel, arena.spec, arena.space.names
    res = wt.search(
        arena.return_fn, arena.ball, jax.random.PRNGKey(wc.seed), aux=policy_params(state),
        searchers=tuple(wc.searchers), episodes=wc.episodes, eval_seed=wc.eval_seed,
        cvar_alpha=wc.cvar_alpha, searcher_kwargs={n: dict(wc[n]) for n in wc.searchers},
        mesh=arena.mesh,
    )[0]  # fmt: skip
    cases = wt.failure_cases(
        res, arena.ball, names,
        threshold=wt.failure_threshold(res.nominal_return, wc.failure_fraction),
        eval_seed=wc.eval_seed, max_cases=wc.max_failures,
    )  # fmt: skip
    idx = np.array([spec.names.index(n) for n in names])
    full = np.tile(spec.nominal, (len(cases), 1))
    for i, c in enumerate(cases):
        full[i, idx] = [c["params"][0][n] for n in names]
    return Attack(
        RoundMetrics(res.nominal_return, res.worst_return),
        full.reshape(-1, spec.dim),
        np.array([c["return"] for c in cases]),
        np.full(len(cases), wc.eval_seed),
    )


def bank_return_fn(arena: Arena) -> Callable[[Any, FailureBank], jax.Array]:
    """``(policy_params, bank) -> f32 ()`` mean return over the valid bank entries (jitted)."""

    def one(pp, p):
        x = jnp.broadcast_to(p, (arena.eval_keys.shape[0], arena.spec.dim))
        return arena.full_return(x, arena.eval_keys, pp).mean()

    def bank_return(pp, bank):
        rets = jax.lax.map(functools.partial(one, pp), bank.params)
        w = bank.valid.astype(jnp.float32)
        return jnp.sum(rets * w) / jnp.maximum(w.sum(), 1.0)

    return jax.jit(bank_return)


def train_round(arena: Arena, state: Any, bank: FailureBank, key: jax.Array) -> Any:
    """``round_updates`` PPO updates with the bank's failures mixed into the training dynamics."""
    cfg, env = arena.config, arena.train_env
    valid = np.asarray(bank.valid)
    sampler = env.sampler
    if valid.any():
        sampler = dynamics.failure_sampler(
            arena.spec, points=np.asarray(bank.params)[valid],
            weights=np.asarray(bank.severity)[valid] + 1e-3, p_adv=cfg.sampler.p_adv,
            jitter=cfg.sampler.jitter, base=env.sampler,
        )  # fmt: skip
    env_r = wrappers.wrap(
        env.env, sampler=sampler, episode_length=env.episode_length,
        action_repeat=env.action_repeat,
    )  # fmt: skip
    filt = shield_filter(cfg, env, arena.spec, bank)
    upd = jax.jit(
        ppo_lib.make_ppo(arena.ppo_cfg, env_r, arena.uset, arena.mesh, action_filter=filt).update
    )
    state = state.replace(key=key)
    for _ in range(cfg.round_updates):
        state, metrics = upd(state)
        _log_shield(metrics)
    return state


def _log_shield(metrics: dict[str, Any]) -> None:
    if "shield/call_rate" in metrics:
        print(f"coevolve: shield call rate {float(metrics['shield/call_rate']):.3f}, "
              f"intervention rate {float(metrics['shield/intervention_rate']):.3f}")  # fmt: skip


def train_and_coevolve(config: Any, workdir: str) -> dict[str, Any]:
    """Pre-trains a PPO/RNAC policy (``config.train``, one seed), then runs :func:`run` with the
    wind tunnel (``config.windtunnel``) as attacker and the failure bank mixed into the training
    dynamics through :func:`adarl.dynamics.failure_sampler`. Writes ``coevolve.json`` (rounds,
    gate decisions, the bank) and ``coevolve.png`` into ``workdir``; returns the JSON dict.

    Every finished round is checkpointed (:func:`save_round`); rerunning with the same workdir
    resumes after the last finished round (pre-training is skipped), and a finished workdir
    (``coevolve.json`` present) returns its result without computing anything.

    Each round re-jits the PPO update, because the bank's parameters are constants of the
    sampler inside the environment wrapper; the attack is compiled once.
    """
    validate_config(config)
    os.makedirs(workdir, exist_ok=True)
    result_path = os.path.join(workdir, RESULT_FILE)
    if os.path.exists(result_path):
        print(f"coevolve: {result_path} exists, nothing to do")
        with open(result_path) as f:
            return json.load(f)
    tc = config.train
    arena, fns = make_arena(config)
    init_key = jax.random.PRNGKey(tc.seed)

    def pretrain():
        print(f"coevolve: pre-training {config.pretrain_updates} PPO updates")
        state = jax.jit(fns.init)(init_key)
        update = jax.jit(fns.update)
        for _ in range(config.pretrain_updates):
            state, metrics = update(state)
            _log_shield(metrics)
        return state

    bank_return = bank_return_fn(arena)
    state, bank, history = checkpointed_run(
        workdir,
        pretrain,
        jax.eval_shape(fns.init, init_key),
        train_round=functools.partial(train_round, arena),
        attack=functools.partial(attack, arena),
        key=jax.random.PRNGKey(tc.seed + 1),
        dim=arena.spec.dim,
        scale=arena.spec.scale,
        capacity=config.bank.capacity,
        min_distance=config.bank.min_distance,
        max_rounds=config.max_rounds,
        patience=config.patience,
        min_improvement=config.gate.min_improvement,
        nominal_budget=config.gate.nominal_budget,
        regression_tol=config.gate.regression_tol if config.gate.use_regression else None,
        bank_return=lambda st, b: float(bank_return(_unbatched(policy_params(st)), b)),
        log=lambda entry: print(f"coevolve: {json.dumps(entry, default=float)}"),
    )
    out = _report(config, arena.spec, bank, history)
    with open(result_path, "w") as f:
        json.dump(out, f, indent=2, default=float)
    _plot_history(history, os.path.join(workdir, "coevolve.png"))
    return out


def _unbatched(tree: Any) -> Any:
    return jax.tree.map(lambda x: x[0], tree)


def _report(config: Any, spec: Any, bank: FailureBank, history: list) -> dict[str, Any]:
    valid = np.asarray(bank.valid)
    return {
        "history": history,
        "accepted_rounds": sum(1 for h in history[1:] if h["accepted"]),
        "bank": {
            "names": list(spec.names),
            "params": np.asarray(bank.params)[valid].tolist(),
            "severity": np.asarray(bank.severity)[valid].tolist(),
            "seed": np.asarray(bank.seed)[valid].tolist(),
        },
        "config": config.to_dict(),
    }


def _plot_history(history: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = [h["round"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(r, [h["nominal"] for h in history], "o-", label="nominal")
    ax.plot(r, [h["worst"] for h in history], "s-", label="wind-tunnel worst case")
    for h in history:
        ax.axvline(h["round"], color="g" if h["accepted"] else "r", alpha=0.15)
    ax.set_xlabel("round (green: accepted, red: rejected)")
    ax.set_ylabel("return")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
