"""Command-line errors of the entry points: raised before anything compiles, naming the field."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

CASES = [
    # (experiment, extra flags, expected text in the error)
    ("adarl", [":nope"], "unknown preset 'nope'; choose one of"),
    ("adarl", [":smoke", "--config.not_a_field=1"], "not_a_field"),
    ("adarl", [":smoke", "--config.algo=ppo"], "config.algo='ppo' is not allowed"),
    ("ssm", [":nope"], "unknown preset 'nope'; choose one of"),
    ("flowrl", [":nope"], "unknown preset 'nope'; choose one of"),
]


@pytest.mark.parametrize(("name", "flags", "expected"), CASES)
def test_bad_config_fails_fast_with_a_clear_message(tmp_path, name, flags, expected):
    preset, *rest = flags
    cmd = [
        sys.executable,
        "-m",
        f"experiments.{name}",
        f"--config=experiments/configs/{name}.py{preset}",
        f"--workdir={tmp_path / 'run'}",
        *rest,
    ]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1")
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert expected in text, text[-2000:]
    # Nothing was compiled and nothing was written to the workdir.
    assert "Finished XLA compilation" not in text and "Compiling" not in text, text[-2000:]
    assert not os.path.exists(tmp_path / "run" / "checkpoints")
