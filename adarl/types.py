"""Typed state for SAC and AdaRL (STYLE.md convention 3: every carry is a named pytree).

Shapes use: ``O`` observation size, ``A`` action size, ``N`` parallel environments, ``C`` number of
critics (2), ``L`` number of factorised hidden->hidden layers per network (``len(hidden) - 1``),
``R`` the maximal rank of a factorised layer (``config.lowrank.rank_max``), ``M`` replay capacity.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax

from adarl.running_stats import RunningStats

Params = Any  # a Flax variable dict {"params": {...}}


class Transition(NamedTuple):
    """One environment transition as stored in replay (leading axes added by batching).

    obs: f32 (O,) raw (unnormalised) observation.
    action: f32 (A,) action in [-1, 1].
    reward: f32 () reward.
    discount: f32 () 0 at a true terminal state, else 1.
    next_obs: f32 (O,) raw next observation (meaningless when ``truncation`` is 1).
    truncation: f32 () 1 masks the transition out of the critic loss: set on time-outs when the
      env's auto-reset overwrote ``next_obs`` (brax-style wrappers); 0 everywhere when the env
      provides ``info["final_obs"]`` (adarl.wrappers), so time-outs are bootstrapped.
    """

    obs: jax.Array
    action: jax.Array
    reward: jax.Array
    discount: jax.Array
    next_obs: jax.Array
    truncation: jax.Array


class ReplayState(NamedTuple):
    """A uniform ring-buffer replay held on device.

    data: Transition whose leaves have a leading capacity axis (M, ...).
    insert_pos: i32 () next write position.
    size: i32 () number of valid entries (<= M).
    """

    data: Transition
    insert_pos: jax.Array
    size: jax.Array


class AgentState(flax.struct.PyTreeNode):
    """Everything SAC/AdaRL learns or schedules.

    actor_params / critic_params / target_critic_params: Flax variable dicts; critic leaves have a
      leading (C,) axis (twin critics via ``nn.vmap``).
    actor_opt_state / critic_opt_state / alpha_opt_state: ``optax.scale_by_adam`` states.
    log_alpha: f32 () log temperature (fixed or learned, ``config.sac.alpha.mode``).
    actor_rank: i32 (L,) active rank of each factorised actor layer.
    critic_rank: i32 (C, L) active rank of each factorised critic layer (target critics share it,
      they are re-copied from the online critics at each truncation, ADARL.md §6).
    normalizer: RunningStats of observations (:mod:`adarl.running_stats`).
    grad_steps: i32 () gradient steps done.
    env_steps: i32 () environment transitions collected (all parallel envs counted).
    last_reset: i32 () gradient step of the last optimizer reset (0 at the start); the learning-
      rate warm-up restarts there (ADARL.md §2.6).
    num_truncations: i32 () rank adaptations done so far.
    """

    actor_params: Params
    critic_params: Params
    target_critic_params: Params
    actor_opt_state: Any
    critic_opt_state: Any
    log_alpha: jax.Array
    alpha_opt_state: Any
    actor_rank: jax.Array
    critic_rank: jax.Array
    normalizer: RunningStats
    grad_steps: jax.Array
    env_steps: jax.Array
    last_reset: jax.Array
    num_truncations: jax.Array


class TrainState(flax.struct.PyTreeNode):
    """The whole training carry (one seed): agent, replay, environment state and RNG key.

    env_state: the batched environment state (N envs) with its zero-size leaves replaced by None
      (orbax cannot save them; ``adarl.train`` rebuilds them from a shape template);
    key: the run's PRNG key.
    episode_return: f32 (N,) return of the episode running in each env slot.
    last_return: f32 () mean return of the episodes finished most recently (for logging).
    """

    agent: AgentState
    buffer: ReplayState
    env_state: Any
    key: jax.Array
    episode_return: jax.Array
    last_return: jax.Array
