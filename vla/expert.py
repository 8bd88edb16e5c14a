"""Scripted experts that produce the demonstrations (one closed-loop rule per task).

* reach: move straight at the named target, speed ``min(1, 4 d)``.
* push: get *behind* the puck on the goal line (walking around it when the gripper starts on the
  goal side), then push along the goal direction; the demonstrations therefore always contain a
  detour and aligned pushes only, which is what the novel-behaviour analysis compares against.
* push_reach: push until the stage flag latches, then reach.

All functions are unbatched and jittable (vmap them); actions are f32[2] in [-1, 1].
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from vla.envs import GRIPPER_RADIUS, PUCK_RADIUS, Scene

Array = jax.Array

_BEHIND = GRIPPER_RADIUS + PUCK_RADIUS + 0.03  # stand-off of the pre-push point
_CLEAR = GRIPPER_RADIUS + PUCK_RADIUS + 0.06  # lateral clearance when walking around the puck


def _toward(delta: Array, gain: float = 4.0) -> Array:
    """Velocity toward ``delta`` with speed min(1, gain |delta|)."""
    dist = jnp.linalg.norm(delta)
    return delta / jnp.maximum(dist, 1e-6) * jnp.minimum(1.0, gain * dist)


def reach_action(scene: Scene, gripper: Array) -> Array:
    return _toward(scene.targets[scene.colour] - gripper)


def push_action(scene: Scene, gripper: Array, puck: Array) -> Array:
    """Walk around to the pre-push point behind the puck, then push toward the goal."""
    to_goal = scene.goal - puck
    direction = to_goal / jnp.maximum(jnp.linalg.norm(to_goal), 1e-6)
    normal = jnp.array([-direction[1], direction[0]])
    rel = gripper - puck
    along, lateral = rel @ direction, rel @ normal
    side = jnp.where(lateral >= 0.0, 1.0, -1.0)
    pre_push = puck - _BEHIND * direction
    # On the goal side and close to the goal line: step sideways first (never push backwards).
    around = _toward(puck + side * 1.3 * _CLEAR * normal - 1.5 * _BEHIND * direction - gripper)
    approach = _toward(pre_push - gripper)
    aligned = (along < -0.5 * _BEHIND) & (jnp.abs(lateral) < 0.03)
    push = jnp.clip(direction - 4.0 * lateral * normal, -1.0, 1.0)
    blocked = (along > -0.8 * _BEHIND) & (jnp.abs(lateral) < _CLEAR)
    return jnp.where(aligned, push, jnp.where(blocked, around, approach))


def expert_action(scene: Scene, gripper: Array, puck: Array, stage: Array) -> Array:
    """The task's expert action f32[2] (unbatched)."""
    reach = reach_action(scene, gripper)
    push = push_action(scene, gripper, puck)
    table = jnp.stack([reach, push, jnp.where(stage, reach, push)])
    return jnp.clip(table[scene.task], -1.0, 1.0)
