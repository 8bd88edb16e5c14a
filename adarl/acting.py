"""Acting in a batched environment: the one place for step bookkeeping (SAC, PPO/RNAC, wind tunnel).

* :class:`EnvPacker`: the env state stored in a checkpointable carry (orbax refuses zero-size
  arrays, e.g. ``mjx.Data.act`` without activations, so those leaves become None and are rebuilt
  from a shape template).
* :func:`outcome`: what a step produced, read from the stepped state: reward, done, time-out,
  true terminal, and the observation the step reached *before* any auto-reset (``final_obs``).
* :func:`track_returns`: undiscounted returns of running episodes and the mean of those that
  just finished.
* :func:`episode_returns`: deterministic return of the first episode of every environment (the
  evaluation and wind-tunnel objective).
* :data:`ActionFilter` and :func:`identity_filter`: the hook between the policy's proposal and the
  environment step (a safety shield, :func:`adarl.shield.make_action_filter`); identity by
  default.

Environments follow the ``adarl.wrappers.wrap`` contract: ``reset(keys (N, 2))``,
``step(state, actions (N, A))``, ``state.obs`` (N, O), ``state.reward``/``state.done`` (N,),
``state.info["truncation"]`` (N,) and, for adarl's wrappers, ``state.info["final_obs"]`` (N, O).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class EnvPacker(NamedTuple):
    """``pack(state)``: zero-size leaves -> None; ``unpack(packed)``: rebuilt from ``template``."""

    template: Any  # jax.ShapeDtypeStruct tree of the batched env state

    @classmethod
    def for_env(cls, env: Any, num_envs: int) -> EnvPacker:
        keys = jax.random.split(jax.random.PRNGKey(0), num_envs)
        return cls(jax.eval_shape(env.reset, keys))

    def pack(self, state: Any) -> Any:
        return jax.tree.map(lambda x: None if x.size == 0 else x, state)

    def unpack(self, packed: Any) -> Any:
        return jax.tree.map(
            lambda t, x: jnp.zeros(t.shape, t.dtype) if x is None else x, self.template, packed
        )


class Outcome(NamedTuple):
    """One batched step, all f32 with leading (N,).

    reward, done (episode ended for any reason), truncation (ended by the time limit only),
    terminal (``done · (1 − truncation)``, a true terminal state); next_obs (N, O) the state the
    step reached before any auto-reset (``info["final_obs"]`` when the env keeps it, else
    ``obs``); bootstrap_timeouts: True (static) when ``next_obs`` is valid on time-outs.
    """

    reward: jax.Array
    done: jax.Array
    truncation: jax.Array
    terminal: jax.Array
    next_obs: jax.Array
    bootstrap_timeouts: bool


def outcome(next_state: Any) -> Outcome:
    """The :class:`Outcome` of a step from the state it returned (auto-reset already applied)."""
    done = next_state.done.astype(jnp.float32)
    info = next_state.info
    trunc = info.get("truncation", jnp.zeros_like(done)).astype(jnp.float32)
    has_final = "final_obs" in info
    next_obs = info["final_obs"] if has_final else next_state.obs
    return Outcome(
        reward=next_state.reward.astype(jnp.float32),
        done=done,
        truncation=trunc,
        terminal=done * (1.0 - trunc),
        next_obs=next_obs,
        bootstrap_timeouts=has_final,
    )


class FilterInfo(NamedTuple):
    """What an action filter did at one batched step: called bool (N,) (the slow check ran for
    that env), intervened bool (N,) (the executed action differs from the proposal)."""

    called: jax.Array
    intervened: jax.Array


# (env_state, proposed actions f32 (N, A), key) -> (executed actions f32 (N, A), FilterInfo).
# It gets the whole batched env state (``state.obs`` (N, O) included), because a model-predictive
# check must simulate forward from the true state, which the observation does not determine.
ActionFilter = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, FilterInfo]]


def identity_filter(env_state: Any, actions: jax.Array, key: jax.Array):
    """The default :data:`ActionFilter`: executes the proposal, never calls, never intervenes."""
    del env_state, key
    none = jnp.zeros(actions.shape[:1], bool)
    return actions, FilterInfo(none, none)


class Returns(NamedTuple):
    """running: f32 (N,) return of each slot's current episode; last: f32 () mean return of the
    most recently finished episodes (0 before the first)."""

    running: jax.Array
    last: jax.Array


def returns_init(num_envs: int) -> Returns:
    return Returns(jnp.zeros((num_envs,), jnp.float32), jnp.zeros((), jnp.float32))


def track_returns(
    returns: Returns, reward: jax.Array, done: jax.Array
) -> tuple[Returns, jax.Array]:
    """Adds ``reward`` (N,) to the running returns, closes episodes where ``done`` (N,) is 1.

    Returns the new :class:`Returns` and the number of episodes finished by this step, f32 ().
    """
    ep_ret = returns.running + reward
    n_done = jnp.sum(done)
    finished = jnp.sum(ep_ret * done) / jnp.maximum(n_done, 1.0)
    last = jnp.where(n_done > 0, finished, returns.last)
    return Returns(ep_ret * (1.0 - done), last), n_done


def episode_returns(
    env: Any,
    policy_fn: Callable[[jax.Array], jax.Array],
    keys: jax.Array,
    params: Mapping[str, jax.Array] | None,
    episode_length: int,
) -> jax.Array:
    """Undiscounted return of the first episode of each of ``n`` environments; f32 (n,).

    Args:
      env: batched environment: ``reset_with_params(keys, params)`` (when ``params`` is given),
        ``reset(keys)``, ``step(state, actions)``.
      policy_fn: raw obs f32 (n, O) -> actions f32 (n, A) in [-1, 1].
      keys: (n, 2) reset keys.
      params: dict name -> f32 (n,) physical parameters, or None (the env's own reset).
      episode_length: steps to simulate (the wrapper's time limit); rewards after the first
        ``done`` (the auto-reset's next episode) are masked out.
    """
    state = env.reset(keys) if params is None else env.reset_with_params(keys, params)

    def step(carry, _):
        state, ret, alive = carry
        state = env.step(state, policy_fn(state.obs))
        ret = ret + alive * state.reward
        alive = alive * (1.0 - state.done.astype(jnp.float32))
        return (state, ret, alive), None

    n = keys.shape[0]
    (_, ret, _), _ = jax.lax.scan(
        step, (state, jnp.zeros((n,)), jnp.ones((n,))), None, length=episode_length
    )
    return ret
