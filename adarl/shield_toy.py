"""The point mass and wall of SAFETY_AND_ANALYSIS.md §1.5: the shield's toy with a known answer.

A pure-JAX point mass (``safety.point_mass_system``) pushed toward a wall at x = ``WALL`` by a
full-thrust policy; its dynamics (mass, damping, push) are drawn from a box ball of radius 1 in
:data:`SPACE` units: mass ∈ [0.7, 1.3], damping ∈ [0, 0.2], push ∈ [0, 0.3] (< 1/mass, so full
reverse thrust, the backup policy, always recovers). Used by ``tests/adarl/test_shield.py`` and
``python -m experiments.shield_toy`` (README's toy table).

:class:`BatchedPointMass` is the same toy as a batched training env (the
:func:`adarl.wrappers.wrap` contract: ``reset(keys)``, ``step(state, actions)``, ``info["steps"]``,
``info["truncation"]``, ``info["final_obs"]``), so a trainer can run with the shield in its acting
loop (``tests/adarl/test_shield_loop.py``).
"""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from adarl import safety, shield
from adarl import windtunnel as wt

WALL = 1.0
NUM_STEPS = 60  # 3 s at dt = 0.05: full thrust from x0 ∈ [-1, -0.5] hits the wall at ~2 s
CFG = shield.ShieldConfig(horizon=20, num_candidates=4, noise=0.5, num_steps=NUM_STEPS)
WORST_CORNER = np.array([1.3, 0.0, 0.3])  # heaviest, undamped, strongest push: the ball's worst

SPACE = wt.Space(
    safety.POINT_MASS_PARAMS,
    np.array([1.0, 0.1, 0.15]),
    np.array([0.3, 0.1, 0.15]),
    np.array([0.1, 0.0, 0.0]),
    np.array([10.0, 10.0, 10.0]),
)


def policy_apply(gain, obs):
    """Full thrust toward the wall, scaled by ``gain`` (a traced 'policy parameter')."""
    return jnp.clip(gain * jnp.ones((obs.shape[0], 1)), -1.0, 1.0)


def critic_apply(w, obs, action):
    """Hand-made risk logit: grows with position and speed toward the wall."""
    return w * (obs[:, 0] + 0.5 * obs[:, 1] - 0.3) + 0.0 * action[:, 0]


def make_runner():
    """``(system, constraint, runner, ball)`` of the toy, the runner compiled once per shape."""
    system = safety.point_mass_system()
    constraint = safety.make_constraint("point_mass", wall=WALL)
    runner = shield.make_runner(system, constraint, CFG, policy_apply, critic_apply)
    return system, constraint, runner, wt.make_ball("box", SPACE, 1.0)


class PointMassEnvState(flax.struct.PyTreeNode):
    """Batched toy state: inner safety.PointMassState (N,) (what the verifier steps); obs f32
    (N, 2); reward, done f32 (N,); info: steps i32 (N,), truncation f32 (N,), final_obs f32
    (N, 2), violations i32 (N,) states past the wall so far, reset_key (N, 2)."""

    inner: Any
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    info: dict


class BatchedPointMass:
    """N point masses under one true θ f32 (3,), reward x, auto-reset after ``episode_length``
    steps (a time limit, not terminal); counts violations ``x > WALL`` in ``info``."""

    observation_size = 2
    action_size = 1

    def __init__(self, theta: Any, episode_length: int = 100):
        self.system = safety.point_mass_system()
        self.theta = jnp.asarray(theta, jnp.float32)
        self.episode_length = int(episode_length)

    def _obs(self, inner):
        return jax.vmap(self.system.obs)(inner)

    def reset(self, keys: jax.Array) -> PointMassEnvState:
        n = keys.shape[0]
        inner = jax.vmap(self.system.reset, in_axes=(0, None))(keys, self.theta)
        obs = self._obs(inner)
        info = {"steps": jnp.zeros((n,), jnp.int32), "truncation": jnp.zeros((n,)),
                "final_obs": obs, "violations": jnp.zeros((n,), jnp.int32),
                "reset_key": jax.vmap(lambda k: jax.random.fold_in(k, 7))(keys)}  # fmt: skip
        return PointMassEnvState(inner, obs, jnp.zeros((n,)), jnp.zeros((n,)), info)

    def step(self, state: PointMassEnvState, actions: jax.Array) -> PointMassEnvState:
        info = state.info
        nxt = jax.vmap(self.system.step, in_axes=(None, 0, 0))(self.theta, state.inner, actions)
        final_obs = self._obs(nxt)
        steps = info["steps"] + 1
        done = steps >= self.episode_length
        keys = jax.vmap(jax.random.split)(info["reset_key"])
        fresh = jax.vmap(self.system.reset, in_axes=(0, None))(keys[:, 0], self.theta)
        inner = jax.tree.map(lambda f, x: jnp.where(done, f, x), fresh, nxt)
        info = {"steps": jnp.where(done, 0, steps), "truncation": done.astype(jnp.float32),
                "final_obs": final_obs, "reset_key": keys[:, 1],
                "violations": info["violations"] + (final_obs[:, 0] > WALL)}  # fmt: skip
        return PointMassEnvState(inner, self._obs(inner), nxt.reward, done.astype(jnp.float32),
                                 info)  # fmt: skip
