"""adarl.params: every parameter kind writes the right fields and moves the physics the right way."""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

from adarl import envs
from adarl.params import KINDS, apply_params, param_spec

# ---------------------------------------------------------------------------------------------
# Tiny MJX rollouts (one compile per model, shared by the module).
# ---------------------------------------------------------------------------------------------

_FLUID_NAMES = (
    "mass:pole",
    "damping:hinge",
    "gear:torque",
    "gravity",
    "wind",
    "density",
    "viscosity",
)

# A capsule sliding along x on a plane (no rotation): the only contact-based test model.
_SLIDER_XML = """
<mujoco>
  <option timestep="0.005"/>
  <worldbody>
    <geom name="floor" type="plane" size="5 5 0.1" friction="0.5 0.005 0.0001"/>
    <body name="block" pos="0 0 0.1">
      <joint name="x" type="slide" axis="1 0 0"/>
      <joint name="z" type="slide" axis="0 0 1"/>
      <geom name="block" type="capsule" size="0.1 0.2" euler="0 90 0" friction="0.1 0.005 0.0001"/>
    </body>
  </worldbody>
</mujoco>
"""


def _rollout_fn(mj_model, mjx_model, nsteps):
    """jit(vmap(params, qpos, qvel, ctrl -> (qpos (T, nq), xipos (T, nbody, 3))))."""

    def one(params, qpos, qvel, ctrl):
        m = apply_params(mjx_model, params)
        d = mjx.make_data(mj_model, impl="jax").replace(qpos=qpos, qvel=qvel, ctrl=ctrl)
        d = mjx.forward(m, d)

        def body(d, _):
            d = mjx.step(m, d)
            return d, (d.qpos, d.qvel, d.xipos)

        return jax.lax.scan(body, d, None, length=nsteps)[1]

    return jax.jit(jax.vmap(one))


@pytest.fixture(scope="module")
def fluid_pendulum():
    return envs.make("pendulum", fluid=True)


@pytest.fixture(scope="module")
def pendulum_runs(fluid_pendulum):
    """Pendulum variants (name -> trajectories), all in one compiled, vmapped call.

    Base: no gravity, no damping, still air, at rest; each variant changes one parameter.
    """
    env = fluid_pendulum
    spec = param_spec(env, _FLUID_NAMES)
    base = dict(zip(spec.names, spec.nominal, strict=True))
    base.update({"gravity": 0.0, "damping:hinge": 0.0, "density": 0.0, "viscosity": 0.0})
    horizontal, spin = np.pi / 2, 5.0
    variants = {  # name: (param changes, qpos0, qvel0, ctrl)
        "torque": ({}, 0.0, 0.0, 1.0),
        "torque_heavy": ({"mass:pole": 3.0}, 0.0, 0.0, 1.0),
        "torque_gear": ({"gear:torque": 2.0}, 0.0, 0.0, 1.0),
        "fall": ({"gravity": 9.81}, horizontal, 0.0, 0.0),
        "fall_heavy_g": ({"gravity": 19.62}, horizontal, 0.0, 0.0),
        "spin": ({}, 0.0, spin, 0.0),
        "spin_damped": ({"damping:hinge": 1.0}, 0.0, spin, 0.0),
        "spin_dense": ({"density": 1000.0}, 0.0, spin, 0.0),
        "spin_viscous": ({"viscosity": 5.0}, 0.0, spin, 0.0),
        "wind": ({"wind": 20.0, "density": 1.2}, 0.0, 0.0, 0.0),
    }
    rows = [{**base, **ch} for ch, _, _, _ in variants.values()]
    params = {n: jnp.asarray([r[n] for r in rows], jnp.float32) for n in spec.names}
    qpos = jnp.asarray([[v[1]] for v in variants.values()], jnp.float32)
    qvel = jnp.asarray([[v[2]] for v in variants.values()], jnp.float32)
    ctrl = jnp.asarray([[v[3]] for v in variants.values()], jnp.float32)
    run = _rollout_fn(env.mj_model, env.mjx_model, nsteps=30)
    qs, vs, xs = jax.device_get(run(params, qpos, qvel, ctrl))
    return {name: (qs[i], vs[i], xs[i]) for i, name in enumerate(variants)}


def _speed(runs, name):
    return abs(float(runs[name][1][-1, 0]))


def test_mass_heavier_pole_turns_slower(pendulum_runs):
    # Same torque, 3x mass (and 3x inertia): angular velocity after 0.3 s is ~3x smaller.
    ratio = _speed(pendulum_runs, "torque_heavy") / _speed(pendulum_runs, "torque")
    assert 0.25 < ratio < 0.45


def test_gear_doubles_torque(pendulum_runs):
    ratio = _speed(pendulum_runs, "torque_gear") / _speed(pendulum_runs, "torque")
    assert 1.8 < ratio < 2.2


def test_gravity_higher_falls_faster(pendulum_runs):
    assert _speed(pendulum_runs, "fall") > 0.1
    assert _speed(pendulum_runs, "fall_heavy_g") > 1.3 * _speed(pendulum_runs, "fall")


def test_damping_density_viscosity_slow_a_spinning_pole(pendulum_runs):
    free = _speed(pendulum_runs, "spin")
    assert free == pytest.approx(5.0, rel=1e-3)  # no loss without damping or medium
    for name in ("spin_damped", "spin_dense", "spin_viscous"):
        assert _speed(pendulum_runs, name) < 0.97 * free, name


def test_wind_pushes_pole_downwind(pendulum_runs):
    # opt.wind = (-W, 0, 0): the pole's centre of mass drifts to -x; still air leaves it at rest.
    x_wind = pendulum_runs["wind"][2][-1, 1, 0]
    x_still = pendulum_runs["torque"][2][0, 1, 0]
    assert x_wind < x_still - 1e-3


@pytest.fixture(scope="module")
def slider():
    mj_model = mujoco.MjModel.from_xml_string(_SLIDER_XML)
    mjx_model = mjx.put_model(mj_model, impl="jax")
    return mj_model, mjx_model


def test_friction_stops_a_sliding_block_sooner(slider):
    mj_model, mjx_model = slider
    run = _rollout_fn(mj_model, mjx_model, nsteps=60)
    # Contact friction is max(floor, block): floor 0.5 nominal, then 1.0, then scale 2 (-> 1.0).
    params = {
        "friction:floor": jnp.asarray([0.5, 1.0, 0.5]),
        "friction_scale": jnp.asarray([1.0, 1.0, 2.0]),
    }
    qvel = jnp.asarray([[2.0, 0.0]] * 3)
    qs, _, _ = run(params, jnp.zeros((3, 2)), qvel, jnp.zeros((3, 0)))
    travel = np.asarray(qs[:, -1, 0])
    assert travel[1] < 0.9 * travel[0]
    assert travel[2] == pytest.approx(travel[1], rel=1e-3)
    assert travel[0] > 0.05


# ---------------------------------------------------------------------------------------------
# Field-level checks (no compilation).
# ---------------------------------------------------------------------------------------------


def test_mass_scales_inertia_and_recomputes_subtree_mass_like_mujoco():
    env = envs.make("cartpole")
    m = apply_params(env.mjx_model, {"mass:cart": 3.0, "mass:pole_1": 0.5})
    ref = mujoco.MjModel.from_xml_path(env.xml_path, env.unwrapped.model_assets)
    cart, pole = ref.body("cart").id, ref.body("pole_1").id
    for b, new in ((cart, 3.0), (pole, 0.5)):
        ref.body_inertia[b] *= new / ref.body_mass[b]
        ref.body_mass[b] = new
    mujoco.mj_setConst(ref, mujoco.MjData(ref))
    np.testing.assert_allclose(m.body_mass, ref.body_mass, rtol=1e-6)
    np.testing.assert_allclose(m.body_inertia, ref.body_inertia, rtol=1e-6)
    np.testing.assert_allclose(m.body_subtreemass, ref.body_subtreemass, rtol=1e-6)


def _ompo_edit(mj_model, torso, foot, walker):
    """OMPO's index-based edits (ADARL.md §3.2, hopper_random.py / walker2d_random.py)."""
    m = mj_model.__copy__()
    m.body_pos[1][2] = 1.05 + torso
    m.body_pos[2][2] = -torso
    m.geom_size[1][1] = torso
    m.geom_size[4][1] = foot
    if walker:
        m.body_pos[5][2] = -torso
        m.geom_size[7][1] = foot
    return m


@pytest.mark.parametrize("task", ["hopper", "walker2d"])
def test_torso_and_foot_lengths_match_ompo_edits(task):
    env = envs.make(task)
    torso, foot = 0.33, 0.27
    m = apply_params(env.mjx_model, {"torso_length": torso, "foot_length": foot})
    ref = _ompo_edit(env.mj_model, torso, foot, walker=task == "walker2d")
    np.testing.assert_allclose(m.body_pos, ref.body_pos, atol=1e-6)
    np.testing.assert_allclose(m.geom_size, ref.geom_size, atol=1e-6)
    # Broad-phase bounds follow the capsules (radius + half-length).
    feet = [1, 4, 7] if task == "walker2d" else [1, 4]
    np.testing.assert_allclose(
        np.asarray(m.geom_rbound)[feet], ref.geom_size[feet, 0] + ref.geom_size[feet, 1], atol=1e-6
    )
    spec = param_spec(env, ["torso_length", "foot_length"])
    np.testing.assert_allclose(spec.nominal, [0.2, 0.195 if task == "hopper" else 0.1], atol=1e-6)


def test_longer_torso_starts_higher_and_longer_foot_reaches_further():
    # Kinematics of the edited model through MuJoCo C: torso centre at 1.05 + L_t at qpos0,
    # thigh joint stays at 1.05, foot tips move apart by 2 (L_f - L_f0).
    env = envs.make("hopper")
    out = {}
    for torso, foot in ((0.2, 0.195), (0.4, 0.3)):
        m = apply_params(env.mjx_model, {"torso_length": torso, "foot_length": foot})
        c = env.mj_model.__copy__()
        c.body_pos[:] = np.asarray(m.body_pos)
        c.geom_size[:] = np.asarray(m.geom_size)
        d = mujoco.MjData(c)
        mujoco.mj_forward(c, d)
        foot_g = c.geom("foot_geom").id
        axis = d.geom_xmat[foot_g].reshape(3, 3)[:, 2]
        tips = d.geom_xpos[foot_g] + np.outer([-1, 1], axis) * c.geom_size[foot_g, 1]
        out[torso] = (d.xpos[c.body("torso").id, 2], d.xpos[c.body("thigh").id, 2], tips)
    assert out[0.2][0] == pytest.approx(1.25, abs=1e-6)
    assert out[0.4][0] == pytest.approx(1.45, abs=1e-6)
    assert out[0.4][1] == pytest.approx(out[0.2][1], abs=1e-6)
    spread = {k: np.linalg.norm(v[2][1] - v[2][0]) for k, v in out.items()}
    assert spread[0.4] - spread[0.2] == pytest.approx(2 * (0.3 - 0.195), abs=1e-6)


def test_apply_params_is_pure_and_vmappable():
    env = envs.make("pendulum")
    before = np.asarray(env.mjx_model.body_mass).copy()
    batch = {"mass:pole": jnp.asarray([1.0, 2.0, 3.0]), "gravity": jnp.asarray([1.0, 2.0, 3.0])}
    models = jax.jit(jax.vmap(lambda p: apply_params(env.mjx_model, p)))(batch)
    pole = env.mj_model.body("pole").id
    np.testing.assert_allclose(models.body_mass[:, pole], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(models.opt.gravity[:, 2], [-1.0, -2.0, -3.0])
    np.testing.assert_array_equal(np.asarray(env.mjx_model.body_mass), before)


def test_every_kind_is_documented_and_readable():
    fluid = envs.make("pendulum", fluid=True)
    hopper = envs.make("hopper")
    for kind, k in KINDS.items():
        assert k.doc, kind
    spec = param_spec(fluid, _FLUID_NAMES + ("friction:floor", "friction_scale"))
    assert spec.nominal[spec.names.index("density")] == pytest.approx(envs.FLUID_DENSITY)
    assert param_spec(hopper).names[:2] == ("torso_length", "foot_length")


@pytest.mark.parametrize(
    "names, match",
    [
        (["inertia:pole"], "kind 'inertia' is not one of"),
        (["mass:nope"], "unknown body 'nope'"),
        (["mass"], "needs a body name"),
        (["gravity:pole"], "takes no ':<target>'"),
        (["mass:pole", "mass:pole"], "duplicate"),
        (["torso_length"], "unknown geom 'torso_geom'"),
    ],
)
def test_bad_names_raise(names, match):
    with pytest.raises(ValueError, match=match):
        param_spec(envs.make("pendulum"), names)


def test_bad_values_raise():
    env = envs.make("pendulum")
    with pytest.raises(ValueError, match="shape"):
        apply_params(env.mjx_model, {"gravity": jnp.ones(3)})
    with pytest.raises(ValueError, match="fluid=True"):
        apply_params(env.mjx_model, {"wind": 1.0})
    with pytest.raises(ValueError, match="lower < upper"):
        param_spec(env, ["gravity"], bounds={"gravity": (1.0, 0.0)})
    with pytest.raises(ValueError, match="scale"):
        param_spec(env, ["gravity"], scale={"gravity": -1.0})
    spec = param_spec(env, ["gravity", "mass:pole"])
    with pytest.raises(ValueError, match="mismatched shapes"):
        spec.check({"gravity": jnp.ones(3), "mass:pole": jnp.ones(2)})
    with pytest.raises(ValueError, match="missing"):
        spec.check({"gravity": jnp.ones(3)})
