"""experiments/flowrl_sweep.py helpers: --set overrides and the IQM [CI] cells."""

import pytest
from absl import app

from experiments import flowrl_sweep
from experiments.configs import flowrl as flowrl_configs


def test_apply_override_parses_literals_and_strings():
    c = flowrl_configs.get_config("arith_strong")
    flowrl_sweep.apply_override(c, "rl.num_updates=2")
    flowrl_sweep.apply_override(c, "eval.extra_temperatures=(0.0,)")
    flowrl_sweep.apply_override(c, "rl.flowrl_weight=verl_clip")
    assert c.rl.num_updates == 2 and c.eval.extra_temperatures == (0.0,)
    assert c.rl.flowrl_weight == "verl_clip"
    with pytest.raises(app.UsageError, match="key=value"):
        flowrl_sweep.apply_override(c, "rl.num_updates")


def test_cells_are_iqm_with_bootstrap_ci():
    # IQM of (0, 1, 2, 3, 100) is the mean of the middle values after trimming 25% each side.
    cell = flowrl_sweep._fmt([0.0, 1.0, 2.0, 3.0, 100.0])
    assert cell.startswith("2.000 [")
    lo, hi = (float(x) for x in cell[len("2.000 [") : -1].split(", "))
    assert lo <= 2.0 <= hi
    assert flowrl_sweep._fmt([0.5]) == "0.500"
