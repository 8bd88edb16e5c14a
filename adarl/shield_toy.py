"""The point mass and wall of SAFETY_AND_ANALYSIS.md §1.5: the shield's toy with a known answer.

A pure-JAX point mass (``safety.point_mass_system``) pushed toward a wall at x = ``WALL`` by a
full-thrust policy; its dynamics (mass, damping, push) are drawn from a box ball of radius 1 in
:data:`SPACE` units: mass ∈ [0.7, 1.3], damping ∈ [0, 0.2], push ∈ [0, 0.3] (< 1/mass, so full
reverse thrust, the backup policy, always recovers). Used by ``tests/adarl/test_shield.py`` and
``python -m experiments.shield_toy`` (README's toy table).
"""

from __future__ import annotations

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
