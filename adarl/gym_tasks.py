"""Gymnasium v5 Hopper, Walker2d and Ant on MJX, from Gymnasium's own XML (issue 13).

``hopper_gym``, ``walker2d_gym`` and ``ant_gym`` (registered in :mod:`adarl.envs`) load the MJCF
files shipped inside the installed ``gymnasium`` package (``gymnasium/envs/mujoco/assets``, found
with :mod:`importlib.resources`; nothing is copied or downloaded) and put them into MJX with
``impl="jax"`` *unchanged*: RK4, Newton with 100 iterations / 50 line-search steps, every
colliding geom. Observation, reward, termination, frame skip and reset noise are those of
Gymnasium 1.4's ``Hopper-v5``, ``Walker2d-v5`` and ``Ant-v5`` with default arguments
(``gymnasium/envs/mujoco/{hopper,walker2d,ant}_v5.py``). ``tests/adarl/test_gym_tasks.py``
steps each task beside ``gymnasium.make(...)`` (MuJoCo C, float64) from the same state with the
same actions.

Per control step (``dt = frame_skip * timestep``; 4 x 0.002 s Hopper/Walker2d, 5 x 0.01 s Ant)::

    reward = w_f * (x_after - x_before) / dt + healthy_reward * healthy
             - ctrl_cost_weight * |a|^2 - contact_cost_weight * |clip(cfrc_ext, -1, 1)|^2

* ``x``: ``qpos[0]`` (rootx) for Hopper/Walker2d; ``xpos`` of body 1 (torso) for Ant, read from
  the data after ``mj_step`` exactly as Gymnasium does (its kinematics are those of the last
  RK4 stage, which MJX's ``rungekutta4`` leaves in the data too).
* ``a`` is the action as given (Gymnasium does not clip it; MuJoCo clamps ``ctrl`` into the
  ctrlrange [-1, 1], which is also Gymnasium's action space).
* ``healthy`` (v5: the healthy reward is paid only when healthy):
  Hopper: 0.7 < qpos[1] and -0.2 < qpos[2] < 0.2 and every entry of (qpos[2:], qvel) in
  (-100, 100), open intervals; Walker2d: 0.8 < qpos[1] < 2 and -1 < qpos[2] < 1; Ant:
  0.2 <= qpos[2] <= 1 (closed) and a finite state.
* ``done = 1 - healthy`` (``terminate_when_unhealthy=True``); the 1000-step time limit is the
  wrapper's (``episode_length``). One departure: ``done`` is also 1 when MJX's state is not
  finite, which MuJoCo C never returns (it resets diverged data itself).
* Contact cost (Ant only, weight 5e-4) and Ant's last 78 observation entries use ``cfrc_ext``,
  computed after the step by ``mjx.rne_postconstraint`` as Gymnasium's ``mj_rnePostConstraint``;
  at reset they are 0, as Gymnasium's (``mj_forward`` does not compute them).

Observations (f32; Gymnasium returns f64): Hopper/Walker2d ``(qpos[1:], clip(qvel, -10, 10))``
(11 / 17); Ant ``(qpos[2:], qvel, clip(cfrc_ext[1:], -1, 1).ravel())`` (105).
Reset: ``qpos0 + U(-s, s)``; ``qvel ~ U(-s, s)`` (Hopper/Walker2d, s = 5e-3) or ``s * N(0, 1)``
(Ant, s = 0.1). :meth:`GymV5Locomotion.state_from` builds the state at a given (qpos, qvel).

Robust-evaluation hooks: the tasks expose ``mjx_model`` through ``unwrapped._mjx_model`` like
every env here, so :func:`adarl.params.apply_params` (mass, friction, gravity, torso/foot length;
Gymnasium's Hopper/Walker2d bodies and geoms carry the names those kinds look up) and
:func:`adarl.wrappers.wrap` work unchanged. ``fluid=True`` turns on the fluid model needed by
the ``wind``/``density``/``viscosity`` parameters (a departure from Gymnasium, which has none).

**Humanoid is not provided**: Gymnasium's ``humanoid.xml`` selects the PGS solver, which MJX does
not implement (``mjx.put_model`` raises NotImplementedError); switching it to Newton would not be
Gymnasium's Humanoid. Use the brax-based ``humanoid`` task (see :mod:`adarl.envs`) instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib.resources
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx
from mujoco.mjx._src import collision_driver, collision_primitive
from mujoco.mjx._src.types import GeomType
from mujoco_playground._src import mjx_env

State = mjx_env.State

# OMPO's fluid constants (ADARL.md §3.2, `ant_random.py`): air; used only with fluid=True.
FLUID_DENSITY = 1.2
FLUID_VISCOSITY = 2e-5


def gymnasium_asset(xml: str) -> str:
    """Path of ``xml`` inside the installed gymnasium package's MuJoCo assets (no copy)."""
    path = importlib.resources.files("gymnasium") / "envs" / "mujoco" / "assets" / xml
    if not path.is_file():
        raise FileNotFoundError(f"{xml!r} is not among gymnasium's MuJoCo assets ({path})")
    return str(path)


@dataclasses.dataclass(frozen=True)
class GymV5Config:
    """One Gymnasium v5 task's constructor defaults.

    Attributes:
      xml: file name in gymnasium's assets.
      frame_skip: physics steps per control step.
      ctrl_cost_weight, healthy_reward, forward_reward_weight: reward weights.
      healthy_z_range: allowed height ``qpos[z_index]``.
      z_index: qpos entry of the height (1: rootz of Hopper/Walker2d, 2: Ant's free joint z).
      main_body: body whose ``xpos[:, 0]`` is x (Ant: 1, the torso), None for rootx ``qpos[0]``.
      cfrc_ext: compute ``cfrc_ext`` after each step (Ant's contact cost and observation).
      healthy_angle_range: allowed torso pitch qpos[2] (planar), None to skip.
      healthy_state_range: bound on every entry of (qpos[2:], qvel) (Hopper), None to skip.
      closed_range: Ant compares with <=, Hopper/Walker2d with <.
      contact_cost_weight, contact_force_range: Ant's contact cost on clipped ``cfrc_ext``.
      reset_noise_scale: s in the reset distribution.
      qvel_noise_normal: qvel = s * N(0, 1) (Ant) instead of U(-s, s).
      obs: "planar" or "ant" (key of ``OBSERVATIONS``).
      episode_length: Gymnasium's TimeLimit.
      fluid: turn on the fluid model (not Gymnasium; for the wind/density parameters).
    """

    xml: str
    frame_skip: int
    ctrl_cost_weight: float
    healthy_z_range: tuple[float, float]
    healthy_angle_range: tuple[float, float] | None = None
    healthy_state_range: tuple[float, float] | None = None
    z_index: int = 1
    main_body: int | None = None
    cfrc_ext: bool = False
    closed_range: bool = False
    healthy_reward: float = 1.0
    forward_reward_weight: float = 1.0
    contact_cost_weight: float = 0.0
    contact_force_range: tuple[float, float] = (-1.0, 1.0)
    reset_noise_scale: float = 5e-3
    qvel_noise_normal: bool = False
    obs: str = "planar"
    episode_length: int = 1000
    fluid: bool = False


GYM_V5: dict[str, GymV5Config] = {
    "hopper_gym": GymV5Config(
        "hopper.xml",
        frame_skip=4,
        ctrl_cost_weight=1e-3,
        healthy_z_range=(0.7, float("inf")),
        healthy_angle_range=(-0.2, 0.2),
        healthy_state_range=(-100.0, 100.0),
    ),
    "walker2d_gym": GymV5Config(
        "walker2d_v5.xml",
        frame_skip=4,
        ctrl_cost_weight=1e-3,
        healthy_z_range=(0.8, 2.0),
        healthy_angle_range=(-1.0, 1.0),
    ),
    "ant_gym": GymV5Config(
        "ant.xml",
        frame_skip=5,
        ctrl_cost_weight=0.5,
        healthy_z_range=(0.2, 1.0),
        z_index=2,
        main_body=1,
        cfrc_ext=True,
        closed_range=True,
        contact_cost_weight=5e-4,
        reset_noise_scale=0.1,
        qvel_noise_normal=True,
        obs="ant",
    ),
}

# Gymnasium's humanoid.xml: PGS solver, not implemented by MJX (see module docstring).
UNSUPPORTED = {"humanoid_gym": "humanoid.xml selects the PGS solver, which MJX does not implement"}


# --------------------------------------------------------------------------------------------
# MuJoCo C's plane-capsule contact frame
# --------------------------------------------------------------------------------------------


@collision_primitive.collider(ncon=2)
def plane_capsule_c(plane: Any, cap: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Two plane-capsule contacts (one per end cap), framed as MuJoCo C frames them.

    Distances and points are MJX's ``plane_capsule``. The frame is C's (``mjc_PlaneCapsule``
    then ``mju_makeFrame``): normal n, first tangent the capsule axis with its normal part
    removed, at any tilt ((1, 0, 0) only if the axis is parallel to n). MJX instead falls back
    to a fixed tangent once that projection is shorter than 0.5 (a capsule steeper than 60
    degrees), which turns the 4-edge friction pyramid (pyramidal cone, condim 3) about n. Ant's
    lower legs stand that steep: with MJX's frame one contact gives a 26% different qacc from
    the same state (measured, see tests/adarl/test_gym_tasks.py). For the planar Hopper and
    Walker2d both frames give the same pyramid (a 90 degree turn).
    """
    n, axis = plane.mat[:, 2], cap.mat[:, 2]
    b = axis - n * jnp.dot(n, axis)
    norm = jnp.linalg.norm(b)
    b = jnp.where(norm > 1e-6, b / jnp.maximum(norm, 1e-6), jnp.array([1.0, 0.0, 0.0]))
    frame = jnp.stack([n, b, jnp.cross(n, b)])
    dists, points = [], []
    for end in (axis * cap.size[1], -axis * cap.size[1]):
        centre = cap.pos + end
        dist = jnp.dot(centre - plane.pos, n) - cap.size[0]
        dists.append(dist)
        points.append(centre - n * (cap.size[0] + 0.5 * dist))
    return jnp.stack(dists), jnp.stack(points), jnp.stack([frame, frame])


_PLANE_CAPSULE = (GeomType.PLANE, GeomType.CAPSULE)


@contextlib.contextmanager
def c_contact_frames() -> Iterator[None]:
    """While tracing inside this context, MJX collides planes and capsules with
    :func:`plane_capsule_c`.

    MJX picks its collision functions from a module table when ``collision`` is traced, so the
    swap is seen only by functions traced inside (compiled functions keep what they traced);
    the table is restored on exit. Playground's ``model_override`` uses the same trace-time seam.
    """
    table = collision_driver._COLLISION_FUNC
    old = table[_PLANE_CAPSULE]
    table[_PLANE_CAPSULE] = plane_capsule_c
    try:
        yield
    finally:
        table[_PLANE_CAPSULE] = old


def _planar_obs(cfg: GymV5Config, data: mjx.Data) -> jax.Array:
    return jnp.concatenate([data.qpos[1:], jnp.clip(data.qvel, -10.0, 10.0)])


def _contact_forces(cfg: GymV5Config, data: mjx.Data) -> jax.Array:
    lo, hi = cfg.contact_force_range
    return jnp.clip(data.cfrc_ext, lo, hi)


def _ant_obs(cfg: GymV5Config, data: mjx.Data) -> jax.Array:
    contact = _contact_forces(cfg, data)[1:].ravel()
    return jnp.concatenate([data.qpos[2:], data.qvel, contact])


OBSERVATIONS: dict[str, Callable[[GymV5Config, mjx.Data], jax.Array]] = {
    "planar": _planar_obs,
    "ant": _ant_obs,
}


def _inside(x: jax.Array, bounds: tuple[float, float], closed: bool) -> jax.Array:
    lo, hi = bounds
    return (x >= lo) & (x <= hi) if closed else (x > lo) & (x < hi)


def is_healthy(cfg: GymV5Config, data: mjx.Data) -> jax.Array:
    """Gymnasium v5's ``is_healthy`` (bool scalar), plus a finite-state check."""
    finite = jnp.isfinite(data.qpos).all() & jnp.isfinite(data.qvel).all()
    ok = finite & _inside(data.qpos[cfg.z_index], cfg.healthy_z_range, cfg.closed_range)
    if cfg.healthy_angle_range is not None:
        ok &= _inside(data.qpos[2], cfg.healthy_angle_range, cfg.closed_range)
    if cfg.healthy_state_range is not None:
        state = jnp.concatenate([data.qpos[2:], data.qvel])
        ok &= jnp.all(_inside(state, cfg.healthy_state_range, cfg.closed_range))
    return ok


def forward_position(cfg: GymV5Config, data: mjx.Data) -> jax.Array:
    """Gymnasium's x: rootx ``qpos[0]`` (planar) or the torso body's ``xpos[1, 0]`` (Ant)."""
    return data.qpos[0] if cfg.main_body is None else data.xpos[cfg.main_body, 0]


def reward_terms(
    cfg: GymV5Config, data: mjx.Data, x_before: jax.Array, action: jax.Array, dt: float
) -> dict[str, jax.Array]:
    """Gymnasium v5's reward terms after a step (f32 scalars; ``reward`` is their sum)."""
    x_velocity = (forward_position(cfg, data) - x_before) / dt
    healthy = is_healthy(cfg, data)
    terms = {
        "reward_forward": cfg.forward_reward_weight * x_velocity,
        "reward_survive": cfg.healthy_reward * healthy.astype(jnp.float32),
        "reward_ctrl": -cfg.ctrl_cost_weight * jnp.sum(jnp.square(action)),
        "reward_contact": -cfg.contact_cost_weight
        * jnp.sum(jnp.square(_contact_forces(cfg, data))),
        "x_velocity": x_velocity,
    }
    terms["reward"] = (
        terms["reward_forward"]
        + terms["reward_survive"]
        + terms["reward_ctrl"]
        + terms["reward_contact"]
    )
    return terms


class ModelProperties:
    """Playground ``MjxEnv`` properties read from ``_mj_model``/``_mjx_model`` and the task
    config's ``episode_length`` and reset noise (``_gym``); shared by the Gym v4 and v5 tasks."""

    @property
    def action_size(self) -> int:
        return int(self._mj_model.nu)

    @property
    def mj_model(self) -> mujoco.MjModel:
        return self._mj_model

    @property
    def mjx_model(self) -> mjx.Model:
        return self._mjx_model

    @property
    def episode_length(self) -> int:
        return self._gym.episode_length

    def reset_noise(self, rng: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """Gym's ``reset_model`` draw: (rng, qpos0 + U(-s, s), qvel U(-s, s) or s N(0, 1)) with
        s = ``reset_noise_scale``; f32 (nq,), (nv,)."""
        cfg, m = self._gym, self._mj_model
        rng, k_q, k_v = jax.random.split(rng, 3)
        s = cfg.reset_noise_scale
        qpos = jnp.asarray(m.qpos0) + jax.random.uniform(k_q, (m.nq,), minval=-s, maxval=s)
        if cfg.qvel_noise_normal:
            qvel = s * jax.random.normal(k_v, (m.nv,))
        else:
            qvel = jax.random.uniform(k_v, (m.nv,), minval=-s, maxval=s)
        return rng, qpos, qvel


class GymV5Locomotion(ModelProperties, mjx_env.MjxEnv):
    """A Gymnasium v5 locomotion task on MJX (module docstring); Playground's MjxEnv interface.

    Args:
      task: key of :data:`GYM_V5`.
      **overrides: :class:`GymV5Config` fields (e.g. ``fluid=True``, ``frame_skip``).
    """

    def __init__(self, task: str, **overrides: Any):
        cfg = dataclasses.replace(GYM_V5[task], **overrides)
        mj_model = mujoco.MjModel.from_xml_path(gymnasium_asset(cfg.xml))
        lo, hi = mj_model.actuator_ctrlrange[:, 0], mj_model.actuator_ctrlrange[:, 1]
        if not (np.all(lo == -1.0) and np.all(hi == 1.0)):
            raise ValueError(f"{cfg.xml}: ctrlrange is not [-1, 1]; actions would need a map")
        if cfg.fluid:
            mj_model.opt.density = FLUID_DENSITY
            mj_model.opt.viscosity = FLUID_VISCOSITY
        self._gym = cfg
        self._task = task
        self._mj_model = mj_model
        self._mjx_model = mjx.put_model(mj_model, impl="jax")
        self._sim_dt = float(mj_model.opt.timestep)
        self._ctrl_dt = self._sim_dt * cfg.frame_skip
        self._config = None
        blank = mjx.make_data(mj_model, impl="jax")
        obs_fn = functools.partial(OBSERVATIONS[cfg.obs], cfg)
        self._obs_size = int(jax.eval_shape(obs_fn, blank).shape[0])

    def state_from(self, qpos: jax.Array, qvel: jax.Array, rng: jax.Array) -> State:
        """The state Gymnasium's ``set_state(qpos, qvel)`` (then ``mj_forward``) gives."""
        qpos, qvel = jnp.asarray(qpos, jnp.float32), jnp.asarray(qvel, jnp.float32)
        data = mjx_env.make_data(self.mj_model, qpos=qpos, qvel=qvel, impl="jax")
        with c_contact_frames():
            data = mjx.forward(self.mjx_model, data)
        # MJX's kinematics writes back normalised quaternions; MuJoCo C's mj_forward leaves qpos
        # as set, and Gymnasium's first (Ant) observation shows it. Dynamics are unaffected.
        data = data.replace(qpos=qpos)
        zero = jnp.zeros(())
        metrics = {k: zero for k in _METRICS}
        obs = OBSERVATIONS[self._gym.obs](self._gym, data)
        return State(data, obs, zero, zero, metrics, {"rng": rng})

    def reset(self, rng: jax.Array) -> State:
        """Gymnasium v5's ``reset_model``: qpos0 + U(-s, s); qvel U(-s, s) or s N(0, 1)."""
        rng, qpos, qvel = self.reset_noise(rng)
        return self.state_from(qpos, qvel, rng)

    def step(self, state: State, action: jax.Array) -> State:
        """One control step: ``frame_skip`` MJX steps with ``ctrl = action``, then Gymnasium's
        reward, termination and observation (module docstring)."""
        cfg = self._gym
        x_before = forward_position(cfg, state.data)
        with c_contact_frames():
            data = mjx_env.step(self.mjx_model, state.data, action, cfg.frame_skip)
        if cfg.cfrc_ext:  # Gymnasium's mj_rnePostConstraint; Hopper/Walker2d never read it
            data = mjx.rne_postconstraint(self.mjx_model, data)
        terms = reward_terms(cfg, data, x_before, action, self.dt)
        done = 1.0 - is_healthy(cfg, data).astype(jnp.float32)
        obs = OBSERVATIONS[cfg.obs](cfg, data)
        metrics = {k: terms[k] for k in _METRICS}
        return state.replace(data=data, obs=obs, reward=terms["reward"], done=done, metrics=metrics)

    @property
    def gym_config(self) -> GymV5Config:
        return self._gym

    @property
    def observation_size(self) -> int:
        """Hopper 11, Walker2d 17 (nq - 1 + nv); Ant 105 (nq - 2 + nv + 6 (nbody - 1))."""
        return self._obs_size

    @property
    def xml_path(self) -> str:
        return gymnasium_asset(self._gym.xml)


_METRICS = ("reward_forward", "reward_survive", "reward_ctrl", "reward_contact", "x_velocity")
