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


def test_paired_deltas_pair_by_seed_against_the_control():
    cols = ["eval/pass@1", "eval/maj@8"]
    records = [
        {"preset": "p", "algo": "sft_continued", "seeds": [0, 1, 2], "columns": cols,
         "final": [[0.5, 0.6], [0.1, 0.2], [0.9, 0.9]]},
        # seed order differs and seed 3 has no control: only seeds 2 and 0 pair.
        {"preset": "p", "algo": "grpo", "seeds": [2, 0, 3], "columns": cols,
         "final": [[0.95, 0.9], [0.55, 0.7], [0.0, 0.0]]},
    ]  # fmt: skip
    lines = flowrl_sweep.paired_deltas(records)
    rows = [line for line in lines if line.startswith("| p / ")]
    assert len(rows) == 1 and "sft_continued" in lines[1]
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert cells[1] == "2"
    # pass@1 deltas (0.05, 0.05) and maj@8 deltas (0.0, 0.1): IQM of two values is their mean.
    assert cells[2].startswith("0.050 [") and cells[3].startswith("0.050 [")
    assert flowrl_sweep.paired_deltas(records[1:]) == []


def test_lr_sweep_compares_lrs_on_common_seeds_and_picks_the_best():
    cols = ["eval/pass@1", "eval/maj@8"]
    rec = lambda algo, seeds, p1: {  # noqa: E731
        "preset": "p", "algo": algo, "seeds": seeds, "columns": cols,
        "final": [[v, 0.0] for v in p1]}  # fmt: skip
    table = flowrl_sweep.lr_sweep_table(
        {
            1e-3: [rec("grpo", [0, 1, 2], [0.2, 0.3, 0.9])],
            # lr 1e-4 lacks seed 2, so both lrs compare on seeds 0 and 1 only.
            1e-4: [rec("grpo", [1, 0], [0.6, 0.4]), rec("ppo", [0], [0.7])],
        }
    )
    assert table["lrs"] == [1e-4, 1e-3]
    grpo, ppo = table["rows"]
    assert grpo["seeds"] == [0, 1] and ppo["seeds"] == [0]
    assert grpo["iqm"] == pytest.approx({1e-4: 0.5, 1e-3: 0.25})
    assert grpo["best_lr"] == 1e-4 and ppo["best_lr"] == 1e-4
    assert grpo["cells"][1e-3].startswith("0.250 [")
    assert (
        "1e-03" not in flowrl_sweep.lr_root("r", 1e-3)
        and flowrl_sweep.lr_root("r", 3e-4) == "r/lr0.0003"
    )


def test_paired_deltas_against_another_arm():
    cols = ["eval/pass@1"]
    records = [
        {"preset": "p", "algo": "sft_continued", "seeds": [0, 1], "columns": cols, "final": [[0.5], [0.5]]},
        {"preset": "p", "algo": "grpo", "seeds": [0, 1], "columns": cols, "final": [[0.4], [0.6]]},
        {"preset": "p", "algo": "flowrl", "seeds": [1, 0], "columns": cols, "final": [[0.9], [0.5]]},
    ]  # fmt: skip
    lines = flowrl_sweep.paired_deltas(records, "grpo")
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| p / ")}
    assert "minus grpo" in lines[1] and set(rows) == {"p / sft_continued", "p / flowrl"}
    assert rows["p / flowrl"].split("|")[3].strip().startswith("0.200 [")  # (0.1 + 0.3) / 2


def test_start_and_preset_deltas_pair_seeds_and_drop_nan_columns():
    cols = ["eval/pass@1", "train/label_accuracy"]
    ttrl = {
        "preset": "t",
        "algo": "grpo",
        "seeds": [0, 1],
        "columns": cols,
        "final": [[0.5, 0.8], [0.7, 0.6]],
        "start": [[0.6, float("nan")], [0.6, float("nan")]],
    }
    oracle = {"preset": "o", "algo": "grpo", "seeds": [1, 0], "columns": cols[:1],
              "final": [[0.9], [0.8]], "start": [[0.6], [0.6]]}  # fmt: skip
    rows = [ln for ln in flowrl_sweep.start_deltas([ttrl]) if ln.startswith("| t / grpo")]
    assert len(rows) == 1 and rows[0].count("[") == 1  # label accuracy has no start value
    assert rows[0].split("|")[3].strip().startswith("0.000 [")  # (-0.1 + 0.1) / 2
    lines = flowrl_sweep.preset_deltas([ttrl, oracle], "t", "o")
    rows = [ln for ln in lines if ln.startswith("| t - o / grpo")]
    assert "| eval/pass@1 |" in lines[3] and rows[0].split("|")[3].strip().startswith("-0.250 [")
