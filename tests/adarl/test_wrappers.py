"""adarl.wrappers: per-episode parameter resampling, auto-reset, compile-once."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest

from adarl import envs
from adarl.dynamics import make_sampler
from adarl.params import apply_params, param_spec
from adarl.wrappers import randomization_fn, wrap

N, T = 4, 4  # envs, episode length


@pytest.fixture(scope="module")
def setup():
    env = envs.make("pendulum")
    spec = param_spec(env)  # mass:pole, damping:hinge, gear:torque, gravity
    sampler = make_sampler("wasserstein", spec, eps=0.3, p=2)
    benv = wrap(env, sampler, episode_length=T)
    return env, spec, benv, jax.jit(benv.reset), jax.jit(benv.step), jax.jit(benv.reset_with_params)


def _stagger(state):
    """Puts the envs at different points of their episodes so that resets are asynchronous."""
    info = dict(state.info)
    info["steps"] = jnp.arange(N, dtype=jnp.int32) % T
    return state.replace(info=info)


def _run(step, state, actions):
    out = []
    for a in actions:
        state = step(state, a)
        out.append(jax.device_get(state))
    return state, out


@pytest.fixture(scope="module")
def trajectory(setup):
    env, spec, benv, reset, step, _ = setup
    state0 = _stagger(reset(jax.random.split(jax.random.PRNGKey(0), N)))
    actions = jax.random.uniform(jax.random.PRNGKey(1), (10, N, 1), minval=-1, maxval=1)
    _, states = _run(step, state0, actions)
    return jax.device_get(state0), states, np.asarray(actions)


def test_params_change_only_at_resets_and_differ_across_batch(setup, trajectory):
    _, spec, *_ = setup
    state0, states, _ = trajectory
    prev = state0
    resets = 0
    for s in states:
        done = s.done > 0
        for name in spec.names:
            before, after = prev.info["params"][name], s.info["params"][name]
            np.testing.assert_array_equal(after[~done], before[~done])
            assert np.all(after[done] != before[done]), name
            assert len(np.unique(after)) == N, name  # every env has its own dynamics
        np.testing.assert_array_equal(s.info["episode"], prev.info["episode"] + done)
        resets += int(done.sum())
        prev = s
    # 10 steps, length 4, staggered start: 0,1,2,3 steps already taken -> 10 resets in total.
    assert resets == 10
    assert {tuple(s.done) for s in states} != {tuple(states[0].done)}  # asynchronous


def test_time_limit_truncation_and_episode_bookkeeping(trajectory):
    state0, states, _ = trajectory
    running = np.zeros(N)
    steps = np.array(state0.info["steps"])
    for s in states:
        running += s.reward
        steps += 1
        done = s.done > 0
        # The pendulum never terminates: every done is a time limit (truncation = 1).
        np.testing.assert_array_equal(done, steps >= T)
        np.testing.assert_array_equal(s.info["truncation"], done.astype(np.float32))
        np.testing.assert_allclose(s.info["last_return"][done], running[done], rtol=1e-5)
        np.testing.assert_array_equal(s.info["last_length"][done], steps[done])
        # After an auto-reset obs is the new episode's; final_obs the state actually reached.
        assert not np.allclose(s.obs[done], s.info["final_obs"][done])
        np.testing.assert_array_equal(s.obs[~done], s.info["final_obs"][~done])
        running[done], steps[done] = 0.0, 0
        np.testing.assert_allclose(s.info["episode_return"], running, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(s.info["steps"], steps)


def test_step_matches_mujoco_c_under_each_envs_params(setup, trajectory):
    """Reference: MuJoCo C stepping a model carrying the same parameters (pendulum, no contact)."""
    env, spec, *_ = setup
    _, states, actions = trajectory
    pole = env.mj_model.body("pole").id
    hinge_dof = env.mj_model.joint("hinge").dofadr[0]
    checked = 0
    for t in range(1, len(states)):
        prev, cur = states[t - 1], states[t]
        for i in np.flatnonzero(cur.done == 0):
            p = {k: float(v[i]) for k, v in prev.info["params"].items()}
            m = env.mj_model.__copy__()
            m.body_inertia[pole] *= p["mass:pole"] / m.body_mass[pole]
            m.body_mass[pole] = p["mass:pole"]
            m.dof_damping[hinge_dof] = p["damping:hinge"]
            m.actuator_gear[0, 0] = p["gear:torque"]
            m.opt.gravity[:] = (0, 0, -p["gravity"])
            d = mujoco.MjData(m)
            d.qpos[:] = prev.data.qpos[i]
            d.qvel[:] = prev.data.qvel[i]
            d.ctrl[:] = actions[t, i]
            for _ in range(env.n_substeps):
                mujoco.mj_step(m, d)
            np.testing.assert_allclose(cur.data.qpos[i], d.qpos, atol=1e-4)
            np.testing.assert_allclose(cur.data.qvel[i], d.qvel, atol=1e-3)
            checked += 1
    assert checked > 10


def test_reset_with_params_keeps_them_and_nothing_recompiles(setup, trajectory):
    env, spec, benv, reset, step, reset_with = setup
    grid = {
        k: jnp.full((N,), v, jnp.float32) for k, v in zip(spec.names, spec.nominal, strict=True)
    }
    grid["gravity"] = jnp.asarray([2.0, 5.0, 9.81, 15.0])
    state = reset_with(jax.random.split(jax.random.PRNGKey(2), N), grid)
    for _ in range(2 * T + 1):  # crosses two auto-resets
        state = step(state, jnp.zeros((N, 1)))
    np.testing.assert_array_equal(state.info["params"]["gravity"], grid["gravity"])
    assert int(state.info["episode"].min()) == 2
    # A fresh reset with other keys -> other parameters, same compiled programs.
    state = step(reset(jax.random.split(jax.random.PRNGKey(9), N)), jnp.ones((N, 1)))
    assert step._cache_size() == 1
    assert reset._cache_size() == 1 and reset_with._cache_size() == 1
    assert benv.trace_count == 1


def test_randomization_fn_for_brax_and_playground(setup):
    env, spec, *_ = setup
    sampler = make_sampler("box", spec, width=0.2)
    model_v, in_axes = randomization_fn(sampler)(
        env.mjx_model, jax.random.split(jax.random.PRNGKey(0), 3)
    )
    assert model_v.body_mass.shape == (3, env.mj_model.nbody)
    assert model_v.geom_size.shape == (env.mj_model.ngeom, 3)
    assert in_axes.body_mass == 0 and in_axes.opt.gravity == 0 and in_axes.actuator_gear == 0
    assert in_axes.geom_size is None and in_axes.body_pos is None
    np.testing.assert_array_less(0.0, np.ptp(np.asarray(model_v.opt.gravity[:, 2])))


def test_bad_input_raises_before_compiling(setup):
    env, spec, benv, reset, step, reset_with = setup
    with pytest.raises(ValueError, match="shape \\(N, 2\\)"):
        benv.reset(jnp.zeros((N,), jnp.uint32))
    state = reset(jax.random.split(jax.random.PRNGKey(0), N))
    with pytest.raises(ValueError, match="actions must have shape"):
        benv.step(state, jnp.zeros((N, 3)))
    with pytest.raises(ValueError, match="missing"):
        benv.reset_with_params(jax.random.split(jax.random.PRNGKey(0), N), {"gravity": jnp.ones(N)})
    bad = {k: jnp.ones((N + 1,)) for k in spec.names}
    with pytest.raises(ValueError, match="shape"):
        benv.reset_with_params(jax.random.split(jax.random.PRNGKey(0), N), bad)
    with pytest.raises(ValueError, match="episode_length"):
        wrap(env, None, episode_length=0)
    with pytest.raises(ValueError, match="action_repeat"):
        wrap(env, None, action_repeat=0)
    with pytest.raises(ValueError, match="Sampler"):
        wrap(env, lambda key, n: {})
    cart_spec = param_spec(envs.make("cartpole"))
    with pytest.raises(ValueError, match="unknown body"):
        wrap(env, make_sampler("nominal", cart_spec))


@pytest.mark.slow
def test_ompo_schedule_follows_each_envs_episode_index():
    env = envs.make("pendulum")
    spec = param_spec(env, ["gravity"])
    sampler = make_sampler("ompo", spec, schedule={"gravity": (9.81, 2.0, 0.5)})
    benv = wrap(env, sampler, episode_length=2)
    step = jax.jit(benv.step)
    state = _stagger(jax.jit(benv.reset)(jax.random.split(jax.random.PRNGKey(0), N)))
    for _ in range(7):
        state = step(state, jnp.zeros((N, 1)))
        i = np.asarray(state.info["episode"])
        np.testing.assert_allclose(
            state.info["params"]["gravity"], 9.81 + 2 * np.sin(0.5 * i), rtol=1e-6
        )
    assert step._cache_size() == 1


@pytest.mark.slow
def test_nominal_wrapper_equals_applying_nominal_params():
    env = envs.make("pendulum")
    spec = param_spec(env)
    keys = jax.random.split(jax.random.PRNGKey(0), N)
    plain, nominal = (
        wrap(env, None, episode_length=T),
        wrap(env, make_sampler("nominal", spec), episode_length=T),
    )
    a, b = jax.jit(plain.reset)(keys), jax.jit(nominal.reset)(keys)
    sa, sb = jax.jit(plain.step), jax.jit(nominal.step)
    for _ in range(T + 2):
        a, b = sa(a, jnp.ones((N, 1))), sb(b, jnp.ones((N, 1)))
        np.testing.assert_allclose(a.obs, b.obs, atol=1e-5)
    m = apply_params(env.mjx_model, spec.nominal_params())
    np.testing.assert_allclose(m.body_mass, env.mjx_model.body_mass, rtol=1e-6)


def test_drawn_parameters_are_clipped_into_their_physical_range(setup):
    """A sampler that does not clip (here: a mass 1 + 40·sin(i), negative at i = 4 and 5) still
    gives the envs only physical values (mass >= its lower bound), at reset and auto-resets."""
    from adarl.dynamics import Sampler

    env, spec, _, _, _, _ = setup
    name = next(n for n, lo in zip(spec.names, spec.lower, strict=True) if n.startswith("mass"))
    lower = spec.lower[spec.names.index(name)]
    assert np.isfinite(lower)

    def fn(key, n, episode):
        m = 1.0 + 40.0 * jnp.sin(jnp.asarray(episode, jnp.float32))
        return {**spec.nominal_params(n), name: m}

    benv = wrap(env, Sampler("raw", spec, fn, uses_episode=True), episode_length=1)
    step = jax.jit(benv.step)
    state = jax.jit(benv.reset)(jax.random.split(jax.random.PRNGKey(0), N))
    seen = []
    for _ in range(6):
        state = step(state, jnp.zeros((N, 1)))
        seen.append(np.asarray(state.info["params"][name]))
    seen = np.concatenate(seen)
    assert seen.min() == pytest.approx(lower)  # sin(4), sin(5) < 0: clipped, not negative
    assert seen.max() > 30.0
