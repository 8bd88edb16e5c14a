"""adarl's trainers on several devices (issue 23): 4 forced CPU devices equal one device.

The comparisons (SAC/AdaRL updates with a truncation, PPO/RNAC-DS updates, a wind-tunnel
search, bad meshes on 4 devices) run in one subprocess, ``parallel_script.py``: XLA_FLAGS must
be set before JAX starts and the rest of the suite runs on one device. The checks that need a
single device run here.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import harness
from adarl import coevolve, rnac, shield_eval
from adarl import train as train_lib
from adarl import windtunnel as wt
from experiments.configs import adarl as adarl_configs
from experiments.configs import coevolve as coevolve_configs
from experiments.configs import rnac as rnac_configs
from experiments.configs import shield as shield_configs
from experiments.configs import windtunnel as wt_configs
from tests import devices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_four_devices_equal_one_device():
    script = os.path.join(ROOT, "tests", "adarl", "parallel_script.py")
    out = devices.run_python([script], devices=4, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    for name in ("sac", "checkpoint", "ppo", "windtunnel", "bad_mesh"):
        assert f"OK {name}" in out.stdout


VALIDATORS = [
    (adarl_configs.get_config("smoke"), train_lib.validate, "parallel"),
    (rnac_configs.get_config("smoke"), rnac.validate_config, "parallel"),
    (wt_configs.get_config("smoke"), wt.validate_config, "parallel"),
    (coevolve_configs.get_config("smoke"), coevolve.validate_config, "parallel"),
    (shield_configs.get_config("smoke"), shield_eval.validate_config, "parallel"),
]


@pytest.mark.parametrize(
    "config,validate,field", VALIDATORS, ids=lambda v: getattr(v, "__module__", "")
)
def test_fsdp_and_too_many_devices_are_one_line_config_errors(config, validate, field):
    validate(config)  # the preset itself is valid on one device
    config.parallel.fsdp = True
    with pytest.raises(harness.ConfigError, match=r"config.parallel.fsdp=True is not supported"):
        validate(config)
    config.parallel.fsdp = False
    config.parallel.mesh_shape = (2,)
    with pytest.raises(harness.ConfigError, match=r"needs 2 devices; 1 exist") as err:
        validate(config)
    assert "\n" not in str(err.value)
    config.parallel.axis_names = ("seed",)
    with pytest.raises(harness.ConfigError, match=r"config.parallel.axis_names"):
        validate(config)


def test_configs_without_a_parallel_section_still_validate():
    """Runs saved before issue 23 (config.json without ``parallel``) load unchanged."""
    c = adarl_configs.get_config("smoke")
    del c.parallel
    train_lib.validate(c)
    assert train_lib.train_mesh(c) is None


# Default suite (issue 23: the 2-process test runs in CI): three JAX processes with their own
# compiles, ~100 s wall on the 2-core machine.
def test_two_processes_equal_one_process(tmp_path):
    """2 processes x 2 CPU devices (gloo) form one 4-device mesh; SAC and SSM LM updates on it
    equal the same updates in one process with 4 devices."""
    script = os.path.join(ROOT, "tests", "adarl", "multiprocess_script.py")
    multi, single, port = tmp_path / "multi.npz", tmp_path / "single.npz", str(devices.free_port())
    outs = devices.run_processes(
        lambda pid: [script, "multi", str(multi), port, str(pid)], devices=2, timeout=900
    )
    for code, out, err in outs:
        assert code == 0, err[-4000:]
        assert "OK multi" in out
    ref = devices.run_python([script, "single", str(single)], devices=4, timeout=900)
    assert ref.returncode == 0, ref.stderr[-4000:]
    a, b = np.load(single), np.load(multi)
    assert a.files == b.files and len(a.files) > int(a["n_sac"]) > 10
    for k in a.files:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--config.train.batch_size=30"], "config.train.batch_size=30 cannot be split over the 4"),
        (["--config.parallel.mesh_shape=(8,)"], "needs 8 devices; 4 exist"),
    ],
)
def test_cli_bad_mesh_is_one_line_before_compiling(tmp_path, flags, expected):
    env = dict(
        os.environ,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
        JAX_PLATFORMS="cpu",
        JAX_LOG_COMPILES="1",
        PYTHONPATH=ROOT,
    )
    cmd = [sys.executable, "-m", "experiments.adarl", "--config=experiments/configs/adarl.py:smoke"]
    cmd += [f"--workdir={tmp_path / 'run'}", *flags]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], out.stderr[-2000:]
    assert "Compiling" not in out.stdout + out.stderr
