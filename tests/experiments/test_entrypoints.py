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


def _validators():
    from adarl import rnac, windtunnel
    from adarl import train as adarl_train
    from experiments.configs import adarl as adarl_cfg
    from experiments.configs import flowrl as flowrl_cfg
    from experiments.configs import rnac as rnac_cfg
    from experiments.configs import ssm as ssm_cfg
    from experiments.configs import windtunnel as windtunnel_cfg
    from flowrl import trainer as flowrl_trainer
    from ssm import train as ssm_train

    return [
        (adarl_cfg, adarl_train.validate),
        (rnac_cfg, rnac.validate_config),
        (windtunnel_cfg, windtunnel.validate_config),
        (ssm_cfg, ssm_train.validate_config),
        (flowrl_cfg, flowrl_trainer.validate_config),
    ]


def test_every_preset_validates():
    """Every preset of every experiment passes its trainer's checks (GPU presets included)."""
    checked = 0
    for module, validate in _validators():
        for preset in module.PRESETS:
            validate(module.get_config(preset))
            checked += 1
    assert checked >= 20
