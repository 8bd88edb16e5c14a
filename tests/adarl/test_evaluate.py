"""adarl.evaluate: the robustness grid's axes (relative, absolute, nominal-0 parameters)."""

import types

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
