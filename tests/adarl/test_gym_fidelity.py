"""Gymnasium's own MuJoCo XML stepped in MJX vs MuJoCo C (issue 13, groundwork for *_gym tasks).

Gymnasium 1.4's hopper.xml and walker2d_v5.xml (RK4, Newton, 100 iterations, every geom
colliding) load into MJX (impl="jax") unchanged; the same random actions (frame skip 4, as
Gymnasium's Hopper/Walker2d-v5) give the same joint positions as ``mujoco.mj_step``.
Measured on CPU (f32 MJX vs f64 C, seed 0): max |Δqpos| after 100 control steps 2.4e-6
(hopper) and 1.4e-4 (walker2d). Humanoid's XML uses the PGS solver, which MJX does not
implement (NotImplementedError), so it cannot be stepped faithfully in MJX.
"""

import os

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from mujoco import mjx

gymnasium = pytest.importorskip("gymnasium")
ASSETS = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets")
FRAME_SKIP = 4
STEPS = 100


def _rollouts(xml: str):
    m = mujoco.MjModel.from_xml_path(os.path.join(ASSETS, xml))
    data = mujoco.MjData(m)
    rng = np.random.default_rng(0)
    acts = rng.uniform(-1, 1, (STEPS, m.nu))
    data.qpos[:] = m.qpos0 + rng.uniform(-5e-3, 5e-3, m.nq)
    mujoco.mj_forward(m, data)
    mx, dx = mjx.put_model(m, impl="jax"), mjx.put_data(m, data, impl="jax")

    def ctrl_step(d, a):
        d = jax.lax.fori_loop(0, FRAME_SKIP, lambda _, x: mjx.step(mx, x), d.replace(ctrl=a))
        return d, d.qpos

    _, q_mjx = jax.jit(lambda d, a: jax.lax.scan(ctrl_step, d, a))(dx, jnp.asarray(acts))
    q_c = []
    for a in acts:
        data.ctrl[:] = a
        mujoco.mj_step(m, data, nstep=FRAME_SKIP)
        q_c.append(data.qpos.copy())
    return m, np.asarray(q_mjx), np.asarray(q_c)


@pytest.mark.slow
@pytest.mark.parametrize("xml, tol", [("hopper.xml", 1e-4), ("walker2d_v5.xml", 2e-3)])
def test_gymnasium_xml_in_mjx_matches_mujoco_c(xml, tol):
    m, q_mjx, q_c = _rollouts(xml)
    assert m.opt.integrator == mujoco.mjtIntegrator.mjINT_RK4 and m.opt.iterations == 100
    err = np.abs(q_mjx - q_c).max(-1)
    assert err.max() < tol, err[[9, 49, 99]]
    assert np.abs(q_c[-1] - q_c[0]).max() > 0.1  # the bodies moved: the comparison is not trivial


def test_humanoid_xml_needs_a_solver_mjx_lacks():
    m = mujoco.MjModel.from_xml_path(os.path.join(ASSETS, "humanoid.xml"))
    assert m.opt.solver == mujoco.mjtSolver.mjSOL_PGS
    with pytest.raises(NotImplementedError):
        mjx.put_model(m, impl="jax")
