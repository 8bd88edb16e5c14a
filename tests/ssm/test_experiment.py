"""The ``smoke`` preset of ``experiments.ssm`` end to end, and config validation."""

import json
import os

import pytest

import harness
from experiments.configs import ssm as configs
from ssm import lm, train


def test_smoke_preset_end_to_end(tmp_path):
    config = configs.get_config("smoke")
    workdir = str(tmp_path / "run")
    summary = train.train_and_evaluate(config, workdir)
    assert summary["final_step"] == config.train.num_updates
    for f in ("summary.json", "config.json", "metrics.jsonl", "loss.png", "accuracy.png"):
        assert os.path.exists(os.path.join(workdir, f)), f
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [1, 2, 3]
    last = records[-1]
    for k in ("train/loss", "eval/token_acc", "eval/seq_acc", "eval/token_acc_L20"):
        assert k in last
    assert 0.0 <= last["eval/token_acc"] <= 1.0
    # a finished run is not redone
    assert train.train_and_evaluate(config, workdir)["final_step"] == config.train.num_updates


@pytest.mark.parametrize(
    "field,value,match",
    [("model.layer", "lstm", "model.layer"), ("task.name", "copy", "task.name"),
     ("train.lr", 0.0, "train.lr"), ("model.scan_method", "cuda", "scan_method")],
)  # fmt: skip
def test_bad_config_fails_before_compiling(tmp_path, field, value, match):
    config = configs.get_config("smoke")
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(harness.ConfigError, match=match):
        train.train_and_evaluate(config, str(tmp_path / "bad"))
    assert not os.path.exists(tmp_path / "bad")


def test_unknown_preset_lists_presets():
    with pytest.raises(harness.ConfigError, match="smoke"):
        configs.get_config("nope")


@pytest.mark.parametrize("preset", sorted(configs.PRESETS))
def test_every_preset_validates(preset):
    config = configs.get_config(preset)
    train.validate_config(config)
    assert lm.validate(config.model).layer_names()[0] == config.model.layer
