"""adarl.envs: registry, interface shapes, Gym-v4 definitions of the locomotion tasks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mujoco import mjx

from adarl import envs
from adarl.params import param_spec

# Gym v4 observation sizes (gym/envs/mujoco/*_v4.py).
GYM_OBS = {"hopper": (11, 3), "walker2d": (17, 6), "ant": (27, 8), "humanoid": (376, 17)}
SMALL = {"pendulum": (3, 1), "cartpole": (5, 1), "reacher": (6, 2)}


def test_registry_lists_every_family():
    names = envs.names()
    for name in [
        *GYM_OBS,
        *SMALL,
        "PendulumSwingup",
        "CartpoleSwingup",
        "ReacherEasy",
        "CheetahRun",
        "WalkerWalk",
        "HopperHop",
    ]:
        assert name in names
    with pytest.raises(ValueError, match="registered: .*hopper"):
        envs.make("HalfCheetah")


@pytest.mark.parametrize(
    "name",
    ["pendulum", "cartpole", "hopper"]
    + [pytest.param(n, marks=pytest.mark.slow) for n in ("reacher", "walker2d", "ant", "humanoid")],
)
def test_interface_shapes_without_compiling(name):
    env = envs.make(name)
    obs_dim, act_dim = {**GYM_OBS, **SMALL}[name]
    assert env.observation_size == obs_dim and env.action_size == act_dim
    assert isinstance(env.mjx_model, mjx.Model) and env.mj_model.nu == act_dim
    state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
    nxt = jax.eval_shape(env.step, state, jax.ShapeDtypeStruct((act_dim,), jnp.float32))
    assert nxt.obs.shape == (obs_dim,) and nxt.obs.dtype == jnp.float32
    assert nxt.reward.shape == () and nxt.done.shape == ()
    # Every default parameter resolves against the model.
    spec = param_spec(env)
    assert spec.dim >= 1 and np.all(np.isfinite(spec.nominal))


def test_gym_frame_skip_and_timestep():
    # Gym v4: Hopper/Walker2d dt = 4 x 0.002; Ant 5 x 0.01; Humanoid 5 x 0.003.
    for name, dt in (("hopper", 0.008), ("walker2d", 0.008), ("ant", 0.05), ("humanoid", 0.015)):
        assert envs.make(name).dt == pytest.approx(dt)


def _data(env, qpos=None, qvel=None):
    d = mjx.make_data(env.mj_model, impl="jax")
    if qpos is not None:
        d = d.replace(qpos=jnp.asarray(qpos, jnp.float32))
    if qvel is not None:
        d = d.replace(qvel=jnp.asarray(qvel, jnp.float32))
    return d


def test_hopper_health_and_observation_follow_gym_v4():
    env = envs.make("hopper")
    q0 = np.zeros(6)

    def healthy(**kw):
        q = q0.copy()
        for i, v in kw.items():
            q[int(i[1:])] = v
        return bool(env._healthy(_data(env, q)))

    # Gym's z is qpos[1] with ref 1.25 (z > 0.7), angle qpos[2] in (-0.2, 0.2), |state| < 100.
    assert healthy()
    assert not healthy(q1=-0.6) and healthy(q1=-0.5)
    assert not healthy(q2=0.25) and not healthy(q2=-0.25) and healthy(q2=0.15)
    assert not healthy(q3=101.0)
    qvel = np.arange(6) * 5.0  # 25 is clipped to 10
    obs = np.asarray(env._get_obs(_data(env, q0 + 0.1, qvel)))
    np.testing.assert_allclose(obs[:5], [1.35, 0.1, 0.1, 0.1, 0.1], rtol=1e-6)
    np.testing.assert_allclose(obs[5:], np.clip(qvel, -10, 10))


def test_walker_and_ant_health_follow_gym_v4():
    walker = envs.make("walker2d")
    q = np.zeros(9)
    assert bool(walker._healthy(_data(walker, q)))
    q[1] = 0.8  # z = 2.05 > 2.0
    assert not bool(walker._healthy(_data(walker, q)))
    q[1], q[2] = 0.0, 1.1  # |angle| > 1
    assert not bool(walker._healthy(_data(walker, q)))
    ant = envs.make("ant")
    qa = np.asarray(ant.mj_model.qpos0).copy()
    assert bool(ant._healthy(_data(ant, qa)))  # z = 0.75 in (0.2, 1.0)
    qa[2] = 1.1
    assert not bool(ant._healthy(_data(ant, qa)))
    assert ant.mj_model.opt.density == pytest.approx(envs.FLUID_DENSITY)  # OMPO turns fluid on


@pytest.mark.parametrize("name", list(GYM_OBS))
def test_gym_observation_matches_its_static_size(name):
    env = envs.make(name)
    obs = jax.eval_shape(env._get_obs, _data(env, env.mj_model.qpos0))
    assert obs.shape == (GYM_OBS[name][0],) == (env.observation_size,)


def test_actions_map_to_ctrlrange():
    env = envs.make("humanoid")
    np.testing.assert_allclose(env._ctrl_lo, -0.4, rtol=1e-6)
    np.testing.assert_allclose(env._ctrl_hi, 0.4, rtol=1e-6)


def test_overrides_are_validated():
    with pytest.raises(ValueError, match="unknown overrides"):
        envs.make("hopper", frameskip=3)
    with pytest.raises(ValueError, match="impl must be 'jax'"):
        envs.make("pendulum", impl="warp")
    assert envs.make("hopper", fluid=True).mjx_model.opt._impl.has_fluid_params
    assert not envs.make("hopper").mjx_model.opt._impl.has_fluid_params


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hopper", "walker2d"])
def test_gym_reward_and_geometry_edit_in_mjx(name):
    """One contact-rich compile: reward terms, termination, and OMPO torso edit in MJX."""
    from adarl.dynamics import make_sampler
    from adarl.wrappers import wrap

    env = envs.make(name)
    spec = param_spec(env, ["torso_length", "foot_length"])
    benv = wrap(env, make_sampler("nominal", spec), episode_length=50)
    reset, step = jax.jit(benv.reset_with_params), jax.jit(benv.step)
    grid = {"torso_length": jnp.asarray([0.2, 0.4]), "foot_length": jnp.asarray([0.195, 0.3])}
    if name == "walker2d":
        grid["foot_length"] = jnp.asarray([0.1, 0.15])
    state = reset(jax.random.split(jax.random.PRNGKey(0), 2), grid)
    torso = env.mj_model.body("torso").id
    z0 = np.asarray(state.data.xpos[:, torso, 2])
    np.testing.assert_allclose(z0, 1.05 + np.asarray(grid["torso_length"]), atol=0.02)
    act = jnp.full((2, env.action_size), 0.3, jnp.float32)  # not weak-typed: one compile
    x_before = np.asarray(state.data.xpos[:, torso, 0])
    nxt = step(state, act)
    x_vel = (np.asarray(nxt.data.xpos[:, torso, 0]) - x_before) / env.dt
    ctrl_cost = 1e-3 * env.action_size * 0.3**2
    np.testing.assert_allclose(nxt.reward, x_vel + 1.0 - ctrl_cost, rtol=1e-4, atol=1e-5)
    for _ in range(40):
        nxt = step(nxt, -jnp.ones((2, env.action_size)))
    assert float(nxt.info["episode"].sum()) >= 1  # falls over -> terminated (or time limit)
    assert step._cache_size() == 1
