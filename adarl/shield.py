"""R²AI's fast and slow safe models: a shield with a learned safety critic and a model-predictive
verifier (SAFETY_AND_ANALYSIS.md §1.5, feature A2; arXiv 2509.06786, abstract).

* **Fast model** (System 1): the policy π_f proposes ``a_f``; the safety critic
  ``Q_c(s, a_f) = sigmoid(logit)`` (:class:`adarl.safety.SafetyCritic`) estimates the probability
  of a violation within H steps.
* **Slow model** (System 2): :func:`verify` applies a candidate action, then follows the
  constraint's backup policy π_b for K steps under each of M models θ_1..θ_M (nominal plus the
  wind tunnel's worst cases), and certifies the candidate only if ``g(s) <= 0`` at every visited
  state of all M rollouts and every end state is in the known-recoverable set (model predictive
  safety certification, cf. safe-control-gym ``controllers/mpsc``). All N×M rollouts are one
  vmapped ``lax.scan``.
* **Escalation**: the verifier is called when ``Q_c(s, a_f) > τ`` or every k steps (``k = 0``:
  never periodically). Compared in logit space, so τ = 0 always calls and τ = 1 never does. When
  called, the proposal and N−2 Gaussian perturbations of it and the backup action are verified;
  the certified candidate closest to ``a_f`` is taken (``a_f`` itself if certified), else the
  backup action. The batch-level switch is ``lax.cond(any(call), slow, fast)``: steps where no
  env escalates skip the verifier, which is the compute the critic saves (under ``vmap`` a cond
  would run both branches, so the batch is the unit of skipping).

τ, k, the policy, critic and verifier models are traced arguments: :func:`make_runner` compiles
once per (system, constraint, N, K, M, T, B) configuration (``Runner.traces`` counts traces).

Guarantee (by induction, as R²AI's Proposition 3.3 "continual safety"; secondary source): if the
verifier's models contain the true model, the recoverable set is invariant and safe under π_b, the
verifier is always called (τ = 0), and the start state is recoverable, then every executed action
is certified or is π_b from a state whose π_b-continuation is certified, so no violation occurs.
With τ > 0 safety is only as good as the critic; the metrics report it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adarl import acting, envs, params, wrappers
from adarl.safety import Constraint, System

# ---------------------------------------------------------------------------------------------
# MJX tasks as shield systems
# ---------------------------------------------------------------------------------------------


def mjx_system(env: Any, spec: params.ParamSpec, action_repeat: int = 1) -> System:
    """A single MJX env (MjxEnv interface) with parameters θ f32 (d,) in ``spec`` order, written
    into the model with :func:`adarl.params.apply_params` at every step (traced, no recompile)."""

    def model(theta):
        return params.apply_params(env.mjx_model, spec.from_vector(theta))

    def reset(key, theta):
        with envs.model_override(env, model(theta)):
            return env.reset(key)

    def step(theta, state, action):
        with envs.model_override(env, model(theta)):
            reward = jnp.zeros(())
            for _ in range(action_repeat):
                state = env.step(state, action)
                reward = reward + state.reward
        return state.replace(reward=reward)

    return System(
        reset=reset,
        step=step,
        obs=lambda s: s.obs,
        reward=lambda s: s.reward,
        done=lambda s: s.done,
        nominal=jnp.asarray(spec.nominal, jnp.float32),
        names=tuple(spec.names),
        observation_size=int(env.observation_size),
        action_size=int(env.action_size),
    )


# ---------------------------------------------------------------------------------------------
# Slow model: the verifier
# ---------------------------------------------------------------------------------------------


def backup_rollout(system: System, constraint: Constraint, horizon: int, theta, state, action):
    """Applies ``action`` then π_b for ``horizon`` steps under θ; returns (max g over the
    ``horizon + 1`` visited states f32 (), end state recoverable bool ())."""
    state = system.step(theta, state, action)

    def body(s, _):
        s = system.step(theta, s, constraint.backup(system.obs(s)))
        return s, constraint.cost(system.obs(s))

    first = constraint.cost(system.obs(state))
    end, costs = jax.lax.scan(body, state, None, length=horizon)
    return jnp.maximum(first, costs.max(initial=-jnp.inf)), constraint.recoverable(system.obs(end))


def verify(system: System, constraint: Constraint, horizon: int, state, actions, thetas):
    """Certificates of N candidate actions f32 (N, act) under M models θ f32 (M, d).

    Returns (certified bool (N,), worst g f32 (N,)): certified iff on all M rollouts every visited
    state satisfies ``g <= 0`` and the end state is recoverable.
    """
    one = lambda th, a: backup_rollout(system, constraint, horizon, th, state, a)  # noqa: E731
    cost, rec = jax.vmap(jax.vmap(one, in_axes=(0, None)), in_axes=(None, 0))(thetas, actions)
    return (cost <= 0.0).all(-1) & rec.all(-1), cost.max(-1)


def candidates(key: jax.Array, a_f: jax.Array, a_b: jax.Array, num: int, noise: float):
    """f32 (num, act): ``a_f``, ``num − 2`` clipped Gaussian perturbations of it, ``a_b``."""
    eps = noise * jax.random.normal(key, (max(num - 2, 0),) + a_f.shape)
    return jnp.concatenate([a_f[None], jnp.clip(a_f + eps, -1.0, 1.0), a_b[None]], axis=0)


def choose(cands: jax.Array, certified: jax.Array, a_f: jax.Array, a_b: jax.Array) -> jax.Array:
    """The certified candidate closest to ``a_f`` (the first on ties, so ``a_f`` when it is
    certified), else ``a_b``."""
    score = jnp.where(certified, -jnp.sum((cands - a_f) ** 2, -1), -jnp.inf)
    return jnp.where(certified.any(), cands[jnp.argmax(score)], a_b)


def threshold_logit(tau: jax.Array) -> jax.Array:
    """logit(τ) with logit(0) = −∞ and logit(1) = +∞ exactly (so τ = 0 always escalates)."""
    tau = jnp.asarray(tau, jnp.float32)
    inner = jnp.log(jnp.clip(tau, 1e-30, 1.0)) - jnp.log1p(-jnp.clip(tau, 0.0, 1.0 - 1e-7))
    return jnp.where(tau <= 0.0, -jnp.inf, jnp.where(tau >= 1.0, jnp.inf, inner))


# ---------------------------------------------------------------------------------------------
# Escalation and the shielded episode
# ---------------------------------------------------------------------------------------------


class ShieldConfig(NamedTuple):
    """Static shape fields: horizon K (backup steps), num_candidates N (≥ 2: a_f and a_b),
    noise (std of the perturbed candidates), num_steps T of an episode."""

    horizon: int = 20
    num_candidates: int = 8
    noise: float = 0.5
    num_steps: int = 100


class Knobs(NamedTuple):
    """Traced escalation settings: tau f32 () critic threshold; every i32 () periodic call
    interval (0 = never). Unshielded = ``Knobs(1.0, 0)``: the verifier is never called."""

    tau: jax.Array
    every: jax.Array


class StepTrace(NamedTuple):
    """Per step (leading axes (B, T) after a run): obs f32 (o,) before the step; action f32 (a,)
    executed; proposal f32 (a,) π_f's action; risk f32 () Q_c(s, a_f); violated bool () g > 0 at
    the next state; called / intervened bool (); reward f32 (); alive bool () before the step."""

    obs: jax.Array
    action: jax.Array
    proposal: jax.Array
    risk: jax.Array
    violated: jax.Array
    called: jax.Array
    intervened: jax.Array
    reward: jax.Array
    alive: jax.Array


class Carry(NamedTuple):
    """Batched episode carry: state (B, ...) env states; alive bool (B,); t i32 () step index."""

    state: Any
    alive: jax.Array
    t: jax.Array


def escalate(logits: jax.Array, t: jax.Array, knobs: Knobs) -> jax.Array:
    """bool (B,): call the verifier where ``logit > logit(τ)`` or at every k-th step."""
    periodic = (knobs.every > 0) & (t % jnp.maximum(knobs.every, 1) == 0)
    return (logits > threshold_logit(knobs.tau)) | periodic


def _slow(system, constraint, cfg, states, proposals, keys, thetas):
    def one(state, a_f, key, thetas):
        a_b = constraint.backup(system.obs(state))
        cands = candidates(key, a_f, a_b, cfg.num_candidates, cfg.noise)
        certified, _ = verify(system, constraint, cfg.horizon, state, cands, thetas)
        return choose(cands, certified, a_f, a_b)

    return jax.vmap(one)(states, proposals, keys, thetas)


def decide(system, constraint, cfg, critic_apply, critic_params, thetas, knobs, states, obs,
           proposals, t, key):  # fmt: skip
    """The shield's decision for a batch of B envs: (executed actions f32 (B, a), called bool
    (B,), critic logits f32 (B,)).

    states: B single-env states of ``system``; obs f32 (B, o); proposals f32 (B, a) π_f's actions;
    thetas f32 (B, M, d) verifier models; t i32 () or (B,) step index of the periodic call.
    """
    logits = critic_apply(critic_params, obs, proposals)
    call = escalate(logits, t, knobs)
    keys = jax.random.split(key, obs.shape[0])
    verified = jax.lax.cond(
        call.any(),
        lambda: _slow(system, constraint, cfg, states, proposals, keys, thetas),
        lambda: proposals,
    )
    return jnp.where(call[:, None], verified, proposals), call, logits


def _step(system, constraint, cfg, policy_apply, critic_apply, args, carry: Carry, key):
    policy_params, critic_params, true_thetas, thetas, knobs = args
    obs = jax.vmap(system.obs)(carry.state)
    proposals = policy_apply(policy_params, obs)
    actions, call, logits = decide(system, constraint, cfg, critic_apply, critic_params, thetas,
                                   knobs, carry.state, obs, proposals, carry.t, key)  # fmt: skip
    nxt = jax.vmap(system.step)(true_thetas, carry.state, actions)
    violated = jax.vmap(lambda s: constraint.cost(system.obs(s)) > 0.0)(nxt)
    trace = StepTrace(
        obs=obs,
        action=actions,
        proposal=proposals,
        risk=jax.nn.sigmoid(logits),
        violated=violated & carry.alive,
        called=call & carry.alive,
        intervened=call & carry.alive & (actions != proposals).any(-1),
        reward=jnp.where(carry.alive, jax.vmap(system.reward)(nxt), 0.0),
        alive=carry.alive,
    )
    alive = carry.alive & (jax.vmap(system.done)(nxt) <= 0)
    return Carry(nxt, alive, carry.t + 1), trace


class Runner(NamedTuple):
    """run: jitted ``(policy_params, critic_params, true_thetas (B, d), verifier_thetas (M, d) or
    per env (B, M, d), keys (B, 2), knobs) -> StepTrace (B, T, ...)``; traces: one entry per
    trace (compile guard)."""

    run: Callable[..., StepTrace]
    traces: list


def make_runner(
    system: System,
    constraint: Constraint,
    cfg: ShieldConfig,
    policy_apply: Callable[[Any, jax.Array], jax.Array],
    critic_apply: Callable[[Any, jax.Array, jax.Array], jax.Array],
) -> Runner:
    """Batched shielded episodes of T = ``cfg.num_steps`` steps. ``policy_apply(params, obs
    (B, o)) -> (B, a)``; ``critic_apply(params, obs (B, o), action (B, a)) -> logit (B,)``.
    Each env steps under its own true θ; the verifier uses the M ``verifier_thetas``."""
    if cfg.num_candidates < 2:
        raise ValueError(f"num_candidates must be >= 2 (a_f and a_b), got {cfg.num_candidates}")
    traces: list = []

    def run(policy_params, critic_params, true_thetas, thetas, keys, knobs):
        traces.append(1)
        if thetas.ndim == 2:  # one verifier model set shared by the batch
            thetas = jnp.broadcast_to(thetas, (keys.shape[0],) + thetas.shape)
        k_reset, k_steps = keys, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys)
        state = jax.vmap(system.reset)(k_reset, true_thetas)
        carry = Carry(state, jnp.ones(keys.shape[0], bool), jnp.zeros((), jnp.int32))
        args = (policy_params, critic_params, true_thetas, thetas, knobs)
        step = lambda c, k: _step(system, constraint, cfg, policy_apply, critic_apply, args, c, k)  # noqa: E731
        _, trace = jax.lax.scan(step, carry, jax.random.split(k_steps[0], cfg.num_steps))
        return jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), trace)

    return Runner(jax.jit(run), traces)


# ---------------------------------------------------------------------------------------------
# The shield as an action filter of a trainer's acting loop (adarl.acting.ActionFilter)
# ---------------------------------------------------------------------------------------------


def always_call_critic(params: Any, obs: jax.Array, actions: jax.Array) -> jax.Array:
    """A critic without parameters: logit 0 (Q_c = 0.5) everywhere. With τ < 0.5 every step
    escalates, so the shield is the verifier alone (no learned part)."""
    del params, actions
    return jnp.zeros(obs.shape[:1], jnp.float32)


def make_action_filter(
    system: System,
    constraint: Constraint,
    cfg: ShieldConfig,
    thetas: jax.Array,
    knobs: Knobs,
    *,
    critic_apply: Callable[[Any, jax.Array, jax.Array], jax.Array] = always_call_critic,
    critic_params: Any = None,
    inner: Callable[[Any], Any] = wrappers.inner_state,
    action_repeat: int = 1,
) -> acting.ActionFilter:
    """The shield as a trainer's :data:`adarl.acting.ActionFilter` on a batched env.

    ``inner(env_state)`` gives the B single-env states ``system`` steps (for
    :func:`adarl.wrappers.wrap` envs: the state without the wrapper's bookkeeping); the verifier
    uses the M models ``thetas`` f32 (M, d) for every env; the periodic call counts control steps
    of the running episode (``info["steps"] // action_repeat``). The filter is pure: it compiles
    into the trainer's step, once per configuration (its arrays are constants of that program).
    """

    def action_filter(env_state, actions, key):
        b = actions.shape[0]
        th = jnp.broadcast_to(jnp.asarray(thetas, jnp.float32), (b,) + tuple(thetas.shape))
        t = env_state.info["steps"] // action_repeat
        executed, call, _ = decide(system, constraint, cfg, critic_apply, critic_params, th,
                                   knobs, inner(env_state), env_state.obs, actions, t, key)  # fmt: skip
        return executed, acting.FilterInfo(call, call & (executed != actions).any(-1))

    return action_filter


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def metrics(trace: StepTrace) -> dict[str, float]:
    """Host metrics of a (B, T) trace: episode violation rate (share of episodes with ≥ 1
    violation), step violation rate, call rate and intervention rate (per alive step), mean
    episode return."""
    t = jax.tree.map(np.asarray, trace)
    steps = max(float(t.alive.sum()), 1.0)
    return {
        "violation_rate": float(t.violated.any(-1).mean()),
        "step_violation_rate": float(t.violated.sum() / steps),
        "call_rate": float(t.called.sum() / steps),
        "intervention_rate": float(t.intervened.sum() / steps),
        "return": float(t.reward.sum(-1).mean()),
    }


def timed(run: Callable, *args: Any) -> tuple[StepTrace, float]:
    """(trace, wall seconds per env step) of an already compiled ``run`` call."""
    start = time.perf_counter()
    trace = jax.block_until_ready(run(*args))
    steps = int(np.prod(trace.alive.shape))
    return trace, (time.perf_counter() - start) / max(steps, 1)
