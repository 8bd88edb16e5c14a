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
    ("flowrl", [":smoke", "--config.model.max_len=4"], "config.model.max_len=4 must be >="),
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


def _cli(name, args, cwd=ROOT):
    cmd = [sys.executable, "-m", f"experiments.{name}", *args]
    env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_LOG_COMPILES="1")
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


CLI_ERRORS = [
    # (arguments after --config=experiments/configs/ssm.py, expected one-line error)
    (
        [":smoke", "--config.model.layr=s4"],
        "unknown field config.model.layr (did you mean 'layer'?)",
    ),
    (
        [":smoke", "--config.nope=1"],
        "config has: eval, model, parallel, progress, seed, task, train",
    ),
    (
        [
            "",
        ],
        "needs a preset, as experiments/configs/ssm.py:<preset>; presets: smoke, cpu",
    ),
    ([":smoke", "--config.model.layer=foo"], "config.model.layer='foo' is not registered"),
    ([":smoke", "--config.model.d_model=abc"], "--config.model.d_model=abc"),
]


@pytest.mark.parametrize(("args", "expected"), CLI_ERRORS)
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, args, expected):
    preset, *rest = args
    out = _cli(
        "ssm", [f"--config=experiments/configs/ssm.py{preset}", f"--workdir={tmp_path}", *rest]
    )
    assert out.returncode == 2, out.stderr[-2000:]
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr[-2000:]
    assert expected in lines[0]
    assert "Compiling" not in out.stdout + out.stderr


def test_help_lists_presets_and_fields_and_exits_0():
    out = _cli("ssm", ["--config=experiments/configs/ssm.py:smoke", "--help"])
    assert out.returncode == 0, out.stderr
    assert "presets: smoke, cpu, selective_copying" in out.stdout
    assert (
        "top-level fields (preset smoke): eval, model, parallel, progress, seed, task, train"
        in out.stdout
    )


def test_cli_refuses_a_workdir_holding_another_config_before_compiling(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # A run of the same experiment with another seed.
    import json

    from experiments.configs import ssm as ssm_cfg

    saved = ssm_cfg.get_config("smoke").to_dict()
    saved["seed"] = 7
    (run_dir / "config.json").write_text(json.dumps(saved))
    before = (run_dir / "config.json").read_text()
    out = _cli("ssm", ["--config=experiments/configs/ssm.py:smoke", f"--workdir={run_dir}"])
    assert out.returncode == 2
    assert "seed: 7 -> 0" in out.stderr and "--overwrite" in out.stderr
    assert "Compiling" not in out.stdout + out.stderr
    assert (run_dir / "config.json").read_text() == before
    # Another experiment's run directory is refused untouched.
    out = _cli("flowrl", ["--config=experiments/configs/flowrl.py:smoke", f"--workdir={run_dir}"])
    assert out.returncode == 2 and "another experiment's run" in out.stderr
    assert os.listdir(run_dir) == ["config.json"]


def test_compare_refuses_runs_missing_the_data_it_needs(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"algo": "sac"}')
    (run / "robust_eval.json").write_text('{"nominal_return": [1.0, 2.0], "grid_mean": [1.0, 2.0]}')
    out = _cli("compare", [f"--run={run}", f"--out={tmp_path / 'out'}"])
    assert out.returncode == 2
    assert f"{run}: no windtunnel.json (worst_case)" in out.stderr
    assert "python -m experiments.windtunnel" in out.stderr
    ok = _cli("compare", [f"--run={run}", f"--out={tmp_path / 'out'}", "--allow_missing"])
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "n/a" in ok.stdout


def test_adarl_cli_records_the_config_its_algorithm_pins(tmp_path):
    """``--config.algo=sac`` pins fields (adarl.train.PAPER_SAC): the CLI claims the workdir
    with the resolved config, so the trainer's own claim matches it (it used to refuse a fresh
    workdir as "a run with a different config"). A bad batch size stops the run after the claim
    with the trainer's ConfigError, before anything compiles."""
    import json

    run_dir = tmp_path / "run"
    args = [
        "--config=experiments/configs/adarl.py:smoke",
        "--config.algo=sac",
        "--config.train.batch_size=0",
        f"--workdir={run_dir}",
    ]
    for _ in range(2):  # the same command again: same workdir, same config, no refusal
        out = _cli("adarl", args)
        assert out.returncode == 2, out.stderr[-2000:]
        assert "train.batch_size" in out.stderr and "different config" not in out.stderr
        assert "Compiling" not in out.stdout + out.stderr
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["network"]["low_rank"] is False
    assert saved["sac"]["lr_schedule"] == "constant" and saved["sac"]["warmup_steps"] == 0
