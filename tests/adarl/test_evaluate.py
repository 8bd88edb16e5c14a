"""adarl.evaluate: the robustness grid's axes (relative, absolute, nominal-0 parameters)."""

import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adarl import evaluate
from experiments.configs import adarl as configs

SPEC = types.SimpleNamespace(
    names=("gravity", "wind", "mass:torso"),
    nominal=np.array([9.81, 0.0, 2.0]),
    lower=np.array([0.0, -50.0, 0.01]),
    upper=np.array([100.0, 50.0, 100.0]),
)


@pytest.mark.parametrize("preset", ["ant", "humanoid"])
def test_paper_presets_grid_wind_with_absolute_values(preset):
    """Wind's nominal is 0: a relative grid would be all zeros; the presets give absolutes."""
    c = configs.get_config(preset)
    names = evaluate.grid_names(c, SPEC)
    assert names == ("gravity", "wind")
    g, w = evaluate.grid_axes(c, SPEC, names)
    np.testing.assert_allclose(g, [9.81, 12.2625, 14.715, 17.1675, 19.62])
    np.testing.assert_allclose(w, [0.0, 0.5, 1.0, 1.5, 2.0])


def test_relative_grid_and_nominal_zero_without_values_raises():
    c = configs.get_config("smoke")
    c.eval.grid_scales = (0.5, 2.0)
    g, m = evaluate.grid_axes(c, SPEC, ("gravity", "mass:torso"))
    np.testing.assert_allclose(g, [4.905, 19.62])
    np.testing.assert_allclose(m, [1.0, 4.0])
    with pytest.raises(ValueError, match="config.eval.grid_values.wind"):
        evaluate.grid_axes(c, SPEC, ("gravity", "wind"))
    c.eval.grid_values.bogus = (1.0,)
    with pytest.raises(ValueError, match="grid_values names"):
        evaluate.grid_axes(c, SPEC, ("gravity", "mass:torso"))


def test_robustness_grid_row_by_row_matches_the_closed_form_and_shows_progress(capsys):
    """A pure-JAX stand-in policy whose return is w·gravity + mass: every seed and grid cell must
    come back in place (rows evaluated one call each), with a progress bar (rate, ETA)."""
    spec = types.SimpleNamespace(
        **vars(SPEC),
        dim=3,
        from_vector=lambda x: {n: x[..., i] for i, n in enumerate(SPEC.names)},
    )

    def fake_evaluate(agent, key, params=None):
        if params is None:
            return jnp.full((3,), 10.0 * agent["w"])
        return agent["w"] * params["gravity"] + params["mass:torso"]

    fns = types.SimpleNamespace(envs=types.SimpleNamespace(spec=spec), evaluate=fake_evaluate)
    c = configs.get_config("smoke")
    c.eval.grid_params = ("gravity", "mass:torso")
    c.eval.grid_scales = (0.5, 1.0, 2.0)
    c.eval.grid_episodes = 2
    agents = {"w": jnp.array([1.0, -2.0])}
    out = evaluate.robustness(fns, agents, c, jax.random.PRNGKey(0), progress=True)
    g, m = np.array([4.905, 9.81, 19.62]), np.array([1.0, 2.0, 4.0])
    want = np.array([1.0, -2.0])[:, None, None] * g[None, :, None] + m[None, None, :]
    np.testing.assert_allclose(out["grid"], want, rtol=1e-6)
    np.testing.assert_allclose(out["nominal"], [10.0, -20.0])
    np.testing.assert_allclose(out["grid_min"], want.min((1, 2)), rtol=1e-6)
    err = capsys.readouterr().err
    assert "robustness grid" in err and "4/4" in err, err
    assert re.search(r"row/s|s/row", err), err  # the rate (tqdm also prints the ETA)
