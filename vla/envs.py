"""Goal-conditioned table-top tasks on MJX with an instruction and a binary success predicate.

The scene (SimpleVLA-RL, arXiv 2509.09674, §6.1 of FLOWRL.md, at CPU scale) is a planar
table: a point-mass *gripper* (sphere, two slide joints driven by velocity actuators) and a
*puck* (sphere, two damped slide joints) that the gripper can push through contact. Three coloured
targets and one puck goal region are points in the scene, not bodies. Three tasks of growing
horizon share it (:data:`TASKS`):

* ``reach``: "reach <colour>": the gripper within ``radius`` of the named target (12 steps);
* ``push``: "push puck to goal": the puck within ``radius`` of the goal (24 steps);
* ``push_reach``: "push puck then reach <colour>": the puck reaches the goal (latched stage
  flag), then the gripper reaches the named target (32 steps).

Success is the simulator-state predicate :func:`success_predicate`; an episode ends at the first
success or at the task's step cap. Each control step holds the action for ``ACTION_REPEAT``
physics steps of 0.02 s. Every env runs MJX's JAX implementation (``impl="jax"``).

A :class:`Scene` is one (task, initial state) pair; :func:`make_scenes` draws ``per_task``
fixed initial states per task from a seed (the analogue of LIBERO's fixed initial states).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx

import harness

Array = jax.Array

GRIPPER_RADIUS = 0.05
PUCK_RADIUS = 0.07
ACTION_REPEAT = 5
ACTION_DIM = 2
NUM_TARGETS = 3
COLOURS = ("red", "green", "blue")
ARENA = 0.8  # positions live in [-ARENA, ARENA]^2; observations are divided by it

MJCF = f"""
<mujoco model="vla_table">
  <option timestep="0.02" gravity="0 0 0"/>
  <worldbody>
    <body name="gripper">
      <joint name="gx" type="slide" axis="1 0 0"/>
      <joint name="gy" type="slide" axis="0 1 0"/>
      <geom type="sphere" size="{GRIPPER_RADIUS}" mass="1" contype="1" conaffinity="2"/>
    </body>
    <body name="puck">
      <joint name="px" type="slide" axis="1 0 0" damping="4"/>
      <joint name="py" type="slide" axis="0 1 0" damping="4"/>
      <geom type="sphere" size="{PUCK_RADIUS}" mass="0.5" contype="2" conaffinity="1"/>
    </body>
  </worldbody>
  <actuator>
    <velocity joint="gx" kv="20" ctrlrange="-1 1" ctrllimited="true"/>
    <velocity joint="gy" kv="20" ctrlrange="-1 1" ctrllimited="true"/>
  </actuator>
</mujoco>
"""

# Instruction vocabulary (token id = index); "<pad>" fills instructions to INSTRUCTION_LEN.
WORDS = ("<pad>", "reach", "push", "puck", "to", "goal", "then", *COLOURS)
INSTRUCTION_LEN = 5


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: its index in the predicate table, step cap and instruction template."""

    index: int
    max_steps: int
    words: tuple[str, ...]  # "{colour}" is replaced by the named target's colour


TASKS: harness.Registry = harness.Registry("vla task")
TASKS.add("reach", TaskSpec(0, 12, ("reach", "{colour}")))
TASKS.add("push", TaskSpec(1, 24, ("push", "puck", "to", "goal")))
TASKS.add("push_reach", TaskSpec(2, 32, ("push", "puck", "then", "reach", "{colour}")))


class Scene(NamedTuple):
    """One (task, initial state); every field has a leading batch axis when batched.

    Attributes:
      task: i32[] task index (:class:`TaskSpec.index`).
      gripper: f32[2], puck: f32[2] initial positions.
      goal: f32[2] puck goal; targets: f32[3, 2] coloured targets; colour: i32[] named target.
      instruction: i32[INSTRUCTION_LEN] word ids; max_steps: i32[] episode cap (control steps).
    """

    task: Array
    gripper: Array
    puck: Array
    goal: Array
    targets: Array
    colour: Array
    instruction: Array
    max_steps: Array


@functools.lru_cache(maxsize=1)
def mj_model() -> mujoco.MjModel:
    return mujoco.MjModel.from_xml_string(MJCF)


@functools.lru_cache(maxsize=1)
def mjx_model() -> mjx.Model:
    return mjx.put_model(mj_model(), impl="jax")


def reset(scene: Scene) -> mjx.Data:
    """MJX data at the scene's initial state (unbatched; vmap it)."""
    data = mjx.make_data(mj_model(), impl="jax")
    qpos = jnp.concatenate([scene.gripper, scene.puck]).astype(jnp.float32)
    return data.replace(qpos=qpos, qvel=jnp.zeros_like(qpos))


def physics_step(data: mjx.Data, action: Array) -> mjx.Data:
    """One control step: velocity command f32[2] in [-1, 1] held for ACTION_REPEAT steps."""
    model = mjx_model()
    data = data.replace(ctrl=jnp.clip(action, -1.0, 1.0))

    def sub(d, _):
        return mjx.step(model, d), None

    return jax.lax.scan(sub, data, None, length=ACTION_REPEAT)[0]


def positions(data: mjx.Data) -> tuple[Array, Array]:
    """(gripper f32[2], puck f32[2]) of unbatched data."""
    return data.qpos[:2], data.qpos[2:4]


def success_predicate(
    scene: Scene, gripper: Array, puck: Array, stage: Array, radius: float
) -> tuple[Array, Array]:
    """The tasks' success predicate on the simulator state (unbatched).

    Returns (success bool[], new stage bool[]); ``stage`` latches "puck in the goal region" for
    ``push_reach``, whose success needs the puck to have reached the goal at an earlier step
    (the stage comes first) and the gripper at the target now.
    """
    target = scene.targets[scene.colour]
    at_target = jnp.linalg.norm(gripper - target) < radius
    puck_in_goal = jnp.linalg.norm(puck - scene.goal) < radius
    new_stage = stage | puck_in_goal
    table = jnp.stack([at_target, puck_in_goal, stage & at_target])
    return table[scene.task], new_stage


def contact(gripper: Array, puck: Array) -> Array:
    """bool[]: gripper and puck touch (centre distance within the radii plus 1 cm)."""
    return jnp.linalg.norm(gripper - puck) < GRIPPER_RADIUS + PUCK_RADIUS + 0.01


def observation(scene: Scene, gripper: Array, puck: Array, stage: Array) -> Array:
    """f32[OBS_DIM] state vector in [-1, 1]: gripper, puck, goal, three targets, stage flag."""
    xy = jnp.concatenate([gripper, puck, scene.goal, scene.targets.reshape(-1)]) / ARENA
    return jnp.concatenate([jnp.clip(xy, -1.0, 1.0), 2.0 * stage[None].astype(jnp.float32) - 1.0])


OBS_DIM = 2 + 2 + 2 + 2 * NUM_TARGETS + 1


def _instruction(spec: TaskSpec, colour: int) -> np.ndarray:
    words = [w.format(colour=COLOURS[colour]) for w in spec.words]
    ids = [WORDS.index(w) for w in words] + [0] * (INSTRUCTION_LEN - len(words))
    return np.asarray(ids, np.int32)


def _unit(rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * np.pi)
    return np.array([np.cos(angle), np.sin(angle)])


def _far_from(rng, points, min_dist, lo=-0.7, hi=0.7) -> np.ndarray:
    for _ in range(1000):
        x = rng.uniform(lo, hi, size=2)
        if all(np.linalg.norm(x - p) >= min_dist for p in points):
            return x
    raise RuntimeError("could not place a point; the arena is too crowded")


def _sample_scene(rng: np.random.Generator, spec: TaskSpec) -> dict[str, np.ndarray]:
    """One initial state: targets apart from each other and from the puck's path."""
    if spec.index == 0:  # reach: the puck is parked out of the way
        gripper = rng.uniform(-0.5, 0.5, size=2)
        puck = _far_from(rng, [gripper], 0.4)
        goal = puck.copy()
    else:
        puck = rng.uniform(-0.35, 0.35, size=2)
        goal = puck + 0.4 * _unit(rng)
        gripper = puck + 0.3 * _unit(rng)
    targets = []
    for _ in range(NUM_TARGETS):
        targets.append(_far_from(rng, [puck, goal, gripper, *targets], 0.3))
    colour = int(rng.integers(NUM_TARGETS))
    return dict(
        task=np.int32(spec.index),
        gripper=gripper.astype(np.float32),
        puck=puck.astype(np.float32),
        goal=goal.astype(np.float32),
        targets=np.stack(targets).astype(np.float32),
        colour=np.int32(colour),
        instruction=_instruction(spec, colour),
        max_steps=np.int32(spec.max_steps),
    )


def make_scenes(task_names: tuple[str, ...], per_task: int, seed: int) -> Scene:
    """``per_task`` fixed initial states of each task, task-major: leaves [T * per_task, ...]."""
    rng = np.random.default_rng(seed)
    rows = [_sample_scene(rng, TASKS.get(n)) for n in task_names for _ in range(per_task)]
    return Scene(**{f: jnp.asarray(np.stack([r[f] for r in rows])) for f in Scene._fields})


def max_steps(task_names: tuple[str, ...]) -> int:
    return max(TASKS.get(n).max_steps for n in task_names)
