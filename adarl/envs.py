"""One registry of MJX tasks with MuJoCo Playground's ``MjxEnv`` interface.

``make(name, **overrides) -> env``: ``env.reset(rng) -> State``, ``env.step(state, action) ->
State`` (``obs`` f32 (obs_dim,), ``reward``/``done`` f32 scalars), ``observation_size``,
``action_size``, ``mj_model``, ``mjx_model``, ``default_params`` (parameter names for
:func:`adarl.params.param_spec`) and ``ompo_task`` (key of ``adarl.dynamics.OMPO_SCHEDULES`` or
None). Actions live in [-1, 1]. Every env uses MJX's JAX implementation (``impl="jax"``).

Families:

* **Gym-v4-style locomotion** (the AdaRL tasks, ADARL.md §3.1): ``hopper``, ``walker2d``, ``ant``,
  ``humanoid``. MJCF from the brax package (``brax/envs/assets/*.xml``; RK4 removed, solver
  iterations reduced, root joints moved, see ADARL.md §7.1: returns are *not* comparable with
  mujoco-py Gym numbers). Rewards, termination, observations, frame skip and reset noise follow
  Gym's v4 classes; details in :class:`GymLocomotion`.
* **Gymnasium v5 locomotion, faithful** (:mod:`adarl.gym_tasks`): ``hopper_gym``,
  ``walker2d_gym``, ``ant_gym``: Gymnasium's own XML unchanged (RK4, Newton 100 iterations, all
  contacts) with v5's observation, reward and termination, checked against ``gymnasium.make``.
  No ``humanoid_gym``: its XML needs the PGS solver, which MJX lacks.
* **Playground DM Control Suite** tasks under their registry names (``PendulumSwingup``,
  ``CartpoleSwingup``, ``ReacherEasy``, ``CheetahRun``, ``WalkerWalk``, ``HopperHop``, ...).
* **Small tasks** for CPU experiments and tests: ``pendulum``, ``cartpole``, ``reacher`` (aliases
  of the Playground swing-up/easy tasks).

Overrides common to all: ``fluid`` (bool; turn on MuJoCo's inertia-box fluid model with OMPO's
``density=1.2, viscosity=2e-5`` before ``put_model``, needed by the ``wind``/``density``/
``viscosity`` parameters; default True for ant/humanoid as in OMPO, else False). Other overrides
go to the task's config (Playground ``config_overrides`` or :class:`GymConfig` fields).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx
from mujoco_playground._src import mjx_env

import harness
from adarl import gym_tasks

State = mjx_env.State

# OMPO's fluid constants (ADARL.md §3.2, `ant_random.py`): air; defined once, in gym_tasks.
FLUID_DENSITY = gym_tasks.FLUID_DENSITY
FLUID_VISCOSITY = gym_tasks.FLUID_VISCOSITY


def _brax_asset(name: str) -> Path:
    import brax

    return Path(brax.__file__).parent / "envs" / "assets" / f"{name}.xml"


def _enable_fluid(mj_model: mujoco.MjModel) -> None:
    mj_model.opt.density = FLUID_DENSITY
    mj_model.opt.viscosity = FLUID_VISCOSITY


# --------------------------------------------------------------------------------------------
# Gym-v4-style locomotion
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GymConfig:
    """Gym v4 task definition (gym/envs/mujoco/{hopper,walker2d,ant,humanoid}_v4.py).

    Attributes:
      xml: brax asset name.
      frame_skip: physics steps per control step (Gym: 4 Hopper/Walker2d, 5 Ant/Humanoid).
      forward_reward_weight, ctrl_cost_weight, healthy_reward: reward terms.
      healthy_z_range: allowed torso height (Gym's z: see ``z_ref``).
      healthy_angle_range: allowed torso pitch qpos[2] (planar tasks), None to skip.
      healthy_state_range: bound on |qpos[2:], qvel| (Hopper), None to skip.
      reset_noise_scale: U(-s, s) on qpos; qvel U(-s, s), or s·N(0, 1) when ``qvel_noise_normal``.
      z_ref: for planar tasks, Gym's rootz joint has ``ref=1.25`` so Gym's z is
        ``qpos_rootz + 1.25``; brax's XML drops the ref, we add it back. Under OMPO's torso edit
        this is exactly OMPO's z (torso height − (L_t − 0.2)). None: free joint, z = qpos[2].
      forward_com: forward velocity of the mass centre (Humanoid) instead of the torso body.
      obs: "planar" (qpos[1:], clip(qvel, ±10)), "ant" (qpos[2:], qvel) or "humanoid"
        (qpos[2:], qvel, cinert, cvel, qfrc_actuator, cfrc_ext; 376 entries as v4).
      episode_length: Gym's TimeLimit (1000); used by ``adarl.wrappers.wrap`` callers.
      newton_ls: use Newton with 1 iteration / 4 line-search steps (brax's MJX setting for
        Ant/Humanoid, ADARL.md §7.1).
      fluid: enable the fluid model (OMPO does for Ant/Humanoid).
    """

    xml: str
    frame_skip: int
    ctrl_cost_weight: float
    healthy_reward: float
    healthy_z_range: tuple[float, float]
    forward_reward_weight: float = 1.0
    healthy_angle_range: tuple[float, float] | None = None
    healthy_state_range: tuple[float, float] | None = None
    reset_noise_scale: float = 5e-3
    qvel_noise_normal: bool = False
    z_ref: float | None = 1.25
    forward_com: bool = False
    obs: str = "planar"
    episode_length: int = 1000
    newton_ls: bool = False
    fluid: bool = False


GYM_CONFIGS: dict[str, GymConfig] = {
    "hopper": GymConfig(
        "hopper",
        frame_skip=4,
        ctrl_cost_weight=1e-3,
        healthy_reward=1.0,
        healthy_z_range=(0.7, float("inf")),
        healthy_angle_range=(-0.2, 0.2),
        healthy_state_range=(-100.0, 100.0),
    ),
    "walker2d": GymConfig(
        "walker2d",
        frame_skip=4,
        ctrl_cost_weight=1e-3,
        healthy_reward=1.0,
        healthy_z_range=(0.8, 2.0),
        healthy_angle_range=(-1.0, 1.0),
    ),
    "ant": GymConfig(
        "ant",
        frame_skip=5,
        ctrl_cost_weight=0.5,
        healthy_reward=1.0,
        healthy_z_range=(0.2, 1.0),
        reset_noise_scale=0.1,
        qvel_noise_normal=True,
        z_ref=None,
        obs="ant",
        newton_ls=True,
        fluid=True,
    ),
    "humanoid": GymConfig(
        "humanoid",
        frame_skip=5,
        forward_reward_weight=1.25,
        ctrl_cost_weight=0.1,
        healthy_reward=5.0,
        healthy_z_range=(1.0, 2.0),
        reset_noise_scale=1e-2,
        z_ref=None,
        forward_com=True,
        obs="humanoid",
        newton_ls=True,
        fluid=True,
    ),
}


class GymLocomotion(gym_tasks.ModelProperties, mjx_env.MjxEnv):
    """Gym-v4 Hopper/Walker2d/Ant/Humanoid on MJX (reward/termination/obs as Gym v4).

    Reward: ``w_f · v_x + healthy_reward − ctrl_cost_weight · |ctrl|²`` with v_x the torso's
    (Humanoid: mass centre's) x displacement over the control step divided by ``dt``; ``done``
    when unhealthy (Gym's ``terminate_when_unhealthy=True``) or the state is not finite.
    Humanoid's v4 reward has no contact cost, and ``cfrc_ext`` is whatever MJX's data holds.
    Actions in [-1, 1] are mapped affinely onto each actuator's ctrlrange (Humanoid ±0.4);
    the ctrl cost is on the mapped control, as Gym's action space is the ctrlrange.
    """

    def __init__(self, task: str, **overrides: Any):
        cfg = dataclasses.replace(GYM_CONFIGS[task], **overrides)
        self._gym = cfg
        self._task = task
        mj_model = mujoco.MjModel.from_xml_path(str(_brax_asset(cfg.xml)))
        if cfg.newton_ls:
            mj_model.opt.solver = mujoco.mjtSolver.mjSOL_NEWTON
            mj_model.opt.iterations = 1
            mj_model.opt.ls_iterations = 4
        if cfg.fluid:
            _enable_fluid(mj_model)
        self._mj_model = mj_model
        self._mjx_model = mjx.put_model(mj_model, impl="jax")
        sim_dt = float(mj_model.opt.timestep)
        self._ctrl_dt = sim_dt * cfg.frame_skip
        self._sim_dt = sim_dt
        self._config = None
        self._torso = mj_model.body("torso").id
        self._ctrl_lo = jnp.asarray(mj_model.actuator_ctrlrange[:, 0], jnp.float32)
        self._ctrl_hi = jnp.asarray(mj_model.actuator_ctrlrange[:, 1], jnp.float32)

    # -- MjxEnv interface ------------------------------------------------------------------

    def reset(self, rng: jax.Array) -> State:
        m = self.mjx_model
        rng, qpos, qvel = self.reset_noise(rng)
        data = mjx_env.make_data(self.mj_model, qpos=qpos, qvel=qvel, impl="jax")
        data = mjx.forward(m, data)
        zero = jnp.zeros(())
        metrics = {"forward_reward": zero, "reward_ctrl": zero, "x_velocity": zero}
        obs = self._get_obs(data)
        return State(data, obs, zero, zero, metrics, {"rng": rng})

    def step(self, state: State, action: jax.Array) -> State:
        cfg = self._gym
        action = jnp.clip(action, -1.0, 1.0)
        ctrl = self._ctrl_lo + (action + 1.0) * 0.5 * (self._ctrl_hi - self._ctrl_lo)
        x0 = self._x(state.data)
        data = mjx_env.step(self.mjx_model, state.data, ctrl, cfg.frame_skip)
        x_vel = (self._x(data) - x0) / self.dt
        forward = cfg.forward_reward_weight * x_vel
        ctrl_cost = cfg.ctrl_cost_weight * jnp.sum(ctrl**2)
        reward = forward + cfg.healthy_reward - ctrl_cost
        finite = jnp.isfinite(data.qpos).all() & jnp.isfinite(data.qvel).all()
        done = 1.0 - (self._healthy(data) & finite).astype(jnp.float32)
        metrics = {"forward_reward": forward, "reward_ctrl": -ctrl_cost, "x_velocity": x_vel}
        obs = self._get_obs(data)
        return state.replace(data=data, obs=obs, reward=reward, done=done, metrics=metrics)

    # -- Gym v4 definitions ------------------------------------------------------------------

    def _x(self, data: mjx.Data) -> jax.Array:
        if self._gym.forward_com:
            mass = self.mjx_model.body_mass
            return jnp.sum(mass * data.xipos[:, 0]) / jnp.sum(mass)
        return data.xpos[self._torso, 0]

    def _z(self, data: mjx.Data) -> jax.Array:
        if self._gym.z_ref is None:
            return data.qpos[2]
        return data.qpos[1] + self._gym.z_ref

    def _healthy(self, data: mjx.Data) -> jax.Array:
        cfg = self._gym
        z = self._z(data)
        ok = (z > cfg.healthy_z_range[0]) & (z < cfg.healthy_z_range[1])
        if cfg.healthy_angle_range is not None:
            lo, hi = cfg.healthy_angle_range
            ok &= (data.qpos[2] > lo) & (data.qpos[2] < hi)
        if cfg.healthy_state_range is not None:
            lo, hi = cfg.healthy_state_range
            state = jnp.concatenate([data.qpos[2:], data.qvel])
            ok &= jnp.all((state > lo) & (state < hi))
        return ok

    def _get_obs(self, data: mjx.Data) -> jax.Array:
        cfg = self._gym
        if cfg.obs == "planar":
            qpos = data.qpos[1:].at[0].set(self._z(data))
            return jnp.concatenate([qpos, jnp.clip(data.qvel, -10.0, 10.0)])
        parts = [data.qpos[2:], data.qvel]
        if cfg.obs == "humanoid":
            parts += [
                data.cinert.ravel(),
                data.cvel.ravel(),
                data.qfrc_actuator,
                data.cfrc_ext.ravel(),
            ]
        return jnp.concatenate(parts)

    @property
    def observation_size(self) -> int:
        """Static size (no tracing): planar nq - 1 + nv; ant nq - 2 + nv; humanoid + 16 nbody + nv."""
        m = self._mj_model
        if self._gym.obs == "planar":
            return m.nq - 1 + m.nv
        size = m.nq - 2 + m.nv
        if self._gym.obs == "humanoid":
            size += 10 * m.nbody + 6 * m.nbody + m.nv + 6 * m.nbody
        return size

    @property
    def xml_path(self) -> str:
        return str(_brax_asset(self._gym.xml))


# --------------------------------------------------------------------------------------------
# Playground DM Control Suite tasks
# --------------------------------------------------------------------------------------------


def _load_playground(name: str, fluid: bool = False, **overrides: Any) -> mjx_env.MjxEnv:
    from mujoco_playground import registry

    if overrides.get("impl", "jax") != "jax":
        raise ValueError(
            f"impl must be 'jax' (MJX's JAX implementation), got {overrides['impl']!r}"
        )
    env = registry.load(name, config_overrides={**overrides, "impl": "jax"})
    if fluid:
        _enable_fluid(env.mj_model)
        env.unwrapped._mjx_model = mjx.put_model(env.mj_model, impl="jax")
    return env


# Parameter sets per task (names resolved against the model; see adarl.params).
_DEFAULT_PARAMS: dict[str, tuple[str, ...]] = {
    "PendulumSwingup": ("mass:pole", "damping:hinge", "gear:torque", "gravity"),
    "CartpoleSwingup": ("mass:cart", "mass:pole_1", "damping:hinge_1", "gear:slide", "gravity"),
    "CartpoleBalance": ("mass:cart", "mass:pole_1", "damping:hinge_1", "gear:slide", "gravity"),
    "ReacherEasy": ("mass:arm", "mass:hand", "damping:shoulder", "damping:wrist", "gear:shoulder"),
    "ReacherHard": ("mass:arm", "mass:hand", "damping:shoulder", "damping:wrist", "gear:shoulder"),
    "CheetahRun": ("mass:torso", "friction_scale", "gravity"),
    "WalkerWalk": ("mass:torso", "friction_scale", "gravity"),
    "WalkerRun": ("mass:torso", "friction_scale", "gravity"),
    "HopperHop": ("mass:torso", "friction_scale", "gravity"),
    "HopperStand": ("mass:torso", "friction_scale", "gravity"),
    "hopper": ("torso_length", "foot_length", "mass:torso", "friction_scale", "gravity"),
    "walker2d": ("torso_length", "foot_length", "mass:torso", "friction_scale", "gravity"),
    "ant": ("gravity", "wind", "mass:torso", "friction_scale"),
    "humanoid": ("gravity", "wind", "mass:torso", "friction_scale"),
    "hopper_gym": ("torso_length", "foot_length", "mass:torso", "friction_scale", "gravity"),
    "walker2d_gym": ("torso_length", "foot_length", "mass:torso", "friction_scale", "gravity"),
    "ant_gym": ("gravity", "mass:torso", "friction_scale"),  # wind needs fluid=True
}
_FALLBACK_PARAMS = ("gravity",)

_ALIASES = {"pendulum": "PendulumSwingup", "cartpole": "CartpoleSwingup", "reacher": "ReacherEasy"}

_PLAYGROUND_TASKS = (
    "AcrobotSwingup",
    "BallInCup",
    "CartpoleBalance",
    "CartpoleSwingup",
    "CheetahRun",
    "FingerSpin",
    "HopperHop",
    "HopperStand",
    "PendulumSwingup",
    "PointMass",
    "ReacherEasy",
    "ReacherHard",
    "WalkerRun",
    "WalkerStand",
    "WalkerWalk",
)


def _finish(env: Any, key: str, ompo_task: str | None) -> Any:
    env.default_params = _DEFAULT_PARAMS.get(key, _FALLBACK_PARAMS)
    env.ompo_task = ompo_task
    env.task_name = key
    return env


def _make_gym(task: str, **overrides: Any) -> GymLocomotion:
    fields = {f.name for f in dataclasses.fields(GymConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown overrides {bad} for {task!r}; allowed: {sorted(fields)}")
    return _finish(GymLocomotion(task, **overrides), task, task)


def _make_gym_v5(task: str, **overrides: Any) -> gym_tasks.GymV5Locomotion:
    fields = {f.name for f in dataclasses.fields(gym_tasks.GymV5Config)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise ValueError(f"unknown overrides {bad} for {task!r}; allowed: {sorted(fields)}")
    # OMPO's schedules are keyed by the base task (hopper_gym -> hopper).
    return _finish(gym_tasks.GymV5Locomotion(task, **overrides), task, task.removesuffix("_gym"))


def _make_playground(name: str, **overrides: Any) -> mjx_env.MjxEnv:
    return _finish(_load_playground(name, **overrides), name, None)


ENVS: harness.Registry[Callable[..., Any]] = harness.Registry("env")
for _t in GYM_CONFIGS:
    ENVS.add(_t, functools.partial(_make_gym, _t))
for _t in gym_tasks.GYM_V5:
    ENVS.add(_t, functools.partial(_make_gym_v5, _t))
for _t in _PLAYGROUND_TASKS:
    ENVS.add(_t, functools.partial(_make_playground, _t))
for _a, _t in _ALIASES.items():
    ENVS.add(_a, functools.partial(_make_playground, _t))


def names() -> tuple[str, ...]:
    """All registered task names."""
    return tuple(sorted(ENVS))


def make(name: str, **overrides: Any) -> Any:
    """Builds a registered task; unknown names raise a ValueError listing :func:`names`."""
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}; registered: {list(names())}")
    return ENVS.get(name)(**overrides)


@contextlib.contextmanager
def model_override(env: Any, mjx_model: mjx.Model) -> Iterator[Any]:
    """Temporarily steps/resets ``env`` with ``mjx_model`` (used inside traced functions).

    Playground's ``BraxDomainRandomizationVmapWrapper`` uses the same seam: every ``MjxEnv``
    reads its model from ``unwrapped._mjx_model`` at trace time.
    """
    inner = env.unwrapped
    old = inner._mjx_model
    inner._mjx_model = mjx_model
    try:
        yield env
    finally:
        inner._mjx_model = old


def episode_length(env: Any, default: int = 1000) -> int:
    """The task's own time limit (Gym 1000, Playground ``config.episode_length``)."""
    length = getattr(env, "episode_length", None)
    if isinstance(length, (int, np.integer)):
        return int(length)
    config = getattr(env.unwrapped, "_config", None)
    return int(getattr(config, "episode_length", default)) if config is not None else default
