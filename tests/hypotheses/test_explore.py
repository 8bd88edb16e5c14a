"""Schema inference and loaders on fixtures (SAFETY_AND_ANALYSIS.md §2.2, Module 1)."""

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

from hypotheses import explore, load
from hypotheses import types as T
from tests.hypotheses import planted

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _generic_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for algo in ("ppo", "sac", "td3"):
        for lr in (1e-4, 3e-4, 1e-3):
            for batch in (64, 256):
                for task in ("hopper", "walker"):
                    for seed in range(2):
                        rows.append({"algo": algo, "lr": lr, "batch": batch, "env": task,
                                     "seed": seed, "run_id": f"{algo}-{lr}-{batch}-{task}-{seed}",
                                     "return": rng.normal(), "success": rng.uniform()})  # fmt: skip
    return pd.DataFrame(rows)


def test_schema_inference_generic_table():
    df = _generic_table()
    schema = explore.infer_schema(df)
    assert schema.factors == {"algo": T.CATEGORICAL, "lr": T.ORDINAL, "batch": T.BINARY}
    assert schema.task == "env" and schema.seed == "seed"
    assert schema.metrics == ("return", "success")


def test_aliases_and_constants():
    df = _generic_table()
    df["algo_id"] = df["algo"].map({"ppo": 0, "sac": 1, "td3": 2})  # one-to-one with algo
    df["gamma"] = 0.99
    schema = explore.infer_schema(
        df, config_columns=("algo", "algo_id", "lr", "batch", "env", "gamma")
    )
    assert "algo_id" not in schema.factors and schema.aliases["algo"] == ("algo_id",)
    assert schema.constants == ("gamma",)
    # a numeric config field that only some runs record is neither a factor nor a metric
    df["until"] = np.where(df["algo"] == "ppo", np.nan, df["lr"])
    schema = explore.infer_schema(
        df, config_columns=("algo", "algo_id", "lr", "batch", "env", "until")
    )
    assert "until" not in schema.factors and "until" not in schema.metrics
    assert schema.metrics == ("return", "success")


def test_directions_and_coverage():
    df = _generic_table()
    schema = explore.infer_schema(df)
    dirs = explore.directions(df, schema)
    designs = {(d.design, d.factor, d.factor_b, d.task) for d in dirs if d.metric == "return"}
    assert (T.K_LEVEL, "algo", "", "hopper") in designs
    assert (T.TWO_LEVEL, "batch", "", "walker") in designs
    assert (T.CONTINUOUS, "lr", "", "hopper") in designs  # ordinal: k-level and trend
    assert (T.INTERACTION, "algo", "batch", "hopper") in designs
    assert (T.INTERACTION, "algo", "env", "") in designs  # factor x task
    cov = explore.coverage(df, schema)
    assert set(cov["n"]) == {12, 18}  # 36 rows per task: 3 levels x 12, 2 levels x 18
    df.loc[0, "success"] = np.nan
    assert explore.missingness(df, schema).set_index("metric").loc["success", "missing"] > 0


def test_directions_are_crossed_on_the_runs_that_record_the_metric():
    """``rank`` exists only for batch 64 (as a low-rank network's rank exists only for low-rank
    runs): no batch x factor or batch x task direction for it, while ``return`` keeps them."""
    df = _generic_table()
    df["rank"] = np.where(df["batch"] == 64, df["return"], np.nan)
    schema = explore.infer_schema(df)
    assert "rank" in schema.metrics
    dirs = {
        (d.design, d.factor, d.factor_b, d.task, d.metric) for d in explore.directions(df, schema)
    }
    for metric, present in (("return", True), ("rank", False)):
        assert ((T.INTERACTION, "algo", "batch", "hopper", metric) in dirs) is present
        assert ((T.INTERACTION, "batch", "env", "", metric) in dirs) is present
        assert ((T.AGGREGATE, "batch", "env", "", metric) in dirs) is present
    assert (
        T.INTERACTION,
        "algo",
        "env",
        "",
        "rank",
    ) in dirs  # algo still varies within rank's runs


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "sweep"
    cfg = {"algo": "sac", "seed": 0, "num_seeds": 3, "sac": {"lr": 0.001}, "hidden": [64, 64]}
    rob = {"robustness": {"nominal": [1.0, 2.0, 3.0], "grid_mean": [1, 2, 3], "final_ranks": {"rank/a": [5, 6, 7]}},
           "final_metrics": {"eval/return": 2.0, "eval/return/std": 0.8}}  # fmt: skip
    _write(root / "vmapped" / "config.json", cfg)
    _write(root / "vmapped" / "summary.json", rob)
    _write(
        root / "vmapped" / "windtunnel.json", {"worst_return": [0.5, 1.5, 2.5], "cvar": [1, 1, 1]}
    )
    _write(root / "agg" / "config.json", cfg | {"algo": "rnac"})
    _write(root / "agg" / "summary.json", {"final_metrics": {"eval/return": 9.0}})
    _write(root / "single" / "config.json", cfg | {"num_seeds": 1, "seed": 7})
    lines = [{"step": s, "eval/return": float(s), "eval/return/std": 0.0} for s in (1, 2, 3, 4)]
    (root / "single" / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    table = [{"preset": "cpu", "algo": "grpo", "seeds": [0, 1], "columns": ["pass@1"],
              "final": [[0.5], [0.7]], "start": [[0.4], [0.4]]}]  # fmt: skip
    _write(root / "flow" / "results.json", table)
    return root


def test_loaders_layouts(runs_dir):
    sweep = load.load_sweep(str(runs_dir))
    t = sweep.table.set_index("run_id")
    # vmapped seeds become replicates with the per-seed arrays
    assert list(t.loc[[f"sweep/vmapped#{i}" for i in range(3)], "robust/nominal"]) == [
        1.0,
        2.0,
        3.0,
    ]
    assert t.loc["sweep/vmapped#2", "windtunnel/worst_return"] == 2.5
    assert t.loc["sweep/vmapped#1", "seed"] == "0/1"
    assert t.loc["sweep/vmapped#0", "rank/a@final"] == 5
    # the multi-seed run without per-seed values is excluded and reported
    assert "sweep/agg" not in t.index and "sweep/agg" in sweep.notes[0]
    # single seed: final-k mean (k=3) and step-normalised AUC from metrics.jsonl
    assert t.loc["sweep/single", "eval/return@final"] == pytest.approx(3.0)
    assert t.loc["sweep/single", "eval/return@auc"] == pytest.approx(2.5)
    assert t.loc["sweep/single", "seed"] == "7"
    # sweep table: one row per seed, final and gain over the start
    assert t.loc["sweep/flow/results.json#0/seed1", "pass@1@gain"] == pytest.approx(0.3)
    assert len(sweep.table) == 3 + 1 + 2


def test_load_sweeps_splits_source_kinds(runs_dir):
    """Harness runs (``rl.algo``) and sweep tables (``algo``) name their factors differently, so
    a directory holding both is read as one sweep per kind; one kind stays one sweep."""
    both = {s.name: s for s in load.load_sweeps(str(runs_dir))}
    assert set(both) == {"sweep-harness_run", "sweep-sweep_table"}
    assert set(both["sweep-sweep_table"].table["loader"]) == {"sweep_table"}
    assert (
        len(both["sweep-harness_run"].table) == 3 + 1 and len(both["sweep-sweep_table"].table) == 2
    )
    (one,) = load.load_sweeps(str(runs_dir / "flow"))
    assert one.name == "flow" and len(one.table) == 2


def test_exclude_skips_matching_directories_and_tables(runs_dir):
    """``--exclude`` patterns drop a run directory with everything below it (a check rerun kept
    beside a sweep) and a sweep table by its file path; the rest is read as before."""
    _write(runs_dir / "single" / "recheck" / "run0" / "config.json", {"algo": "sac", "seed": 0})
    _write(runs_dir / "single" / "recheck" / "run0" / "summary.json", {"final_metrics": {"x": 1}})
    ids = [p for _, p in load.discover(str(runs_dir))]
    assert str(runs_dir / "single" / "recheck" / "run0") in ids
    kept = [p for _, p in load.discover(str(runs_dir), ("*/recheck", "*/flow/results.json"))]
    assert kept == [p for p in ids if "recheck" not in p and not p.endswith("results.json")]
    assert str(runs_dir / "single") in kept and str(runs_dir / "vmapped") in kept
    (one,) = load.load_sweeps(str(runs_dir), exclude=("*/recheck", "*/flow"))
    assert one.name == "sweep" and len(one.table) == 3 + 1
    assert list(load.discover(str(runs_dir), ("*/sweep",))) == []


def test_load_recorded_results(tmp_path):
    """The recorded adarl ``cpu`` results: 3 algorithms x 5 vmapped seeds; the rnac runs are
    aggregate-only. (Copied apart: ``results/adarl`` also holds the cpu_robust arms, another
    sweep with more factors.)"""
    for run in (ROOT / "results" / "adarl").glob("cpu_*"):
        shutil.copytree(run, tmp_path / run.name)
    sweep = load.load_sweep(str(tmp_path))
    schema = explore.infer_schema(sweep.table, sweep.config_columns)
    assert schema.factors == {"algo": T.CATEGORICAL}
    assert sweep.table.groupby("algo").size().to_dict() == {"adarl": 5, "parseval": 5, "sac": 5}
    assert "robust/grid_min" in schema.metrics


def test_stratify_makes_another_protocol_another_task():
    """The runs of two evaluation grids are two tasks: the schedule that changes with the grid
    gets no direction (it would carry the grid's -300), the algorithm is compared within each
    grid, and a sample-size field (``eval.num_episodes``) neither splits nor becomes a factor."""
    sweep = explore.stratify(planted.two_protocol_sweep())
    assert explore.STRATUM in sweep.table and "eval.grid_scales" not in sweep.table
    tasks = set(sweep.table[explore.STRATUM])
    assert tasks == {"Cartpole | eval.grid_scales=(0.5, 1.0, 2.0)",
                     "Cartpole | eval.grid_scales=(0.25, 1.0, 4.0)"}  # fmt: skip
    schema = explore.infer_schema(sweep.table, sweep.config_columns)
    assert schema.task == explore.STRATUM
    dirs = explore.directions(sweep.table, schema)
    assert {d.factor for d in dirs} == {"rl.algo"}
    assert {d.task for d in dirs if d.design == T.K_LEVEL} == tasks
    assert sweep.notes and "eval.grid_scales" in sweep.notes[-1]
    # without the split the schedule is a factor with a direction on the grid minimum
    raw = planted.two_protocol_sweep()
    raw_schema = explore.infer_schema(raw.table, raw.config_columns)
    assert any(d.factor == "sac.lr_schedule" for d in explore.directions(raw.table, raw_schema))
    # sample sizes differing with the grid do not split further; one protocol is left unchanged
    assert set(explore.stratify(planted.two_protocol_sweep(True)).table[explore.STRATUM]) == tasks
    one = planted.two_protocol_sweep()
    one = T.Sweep("one", one.table[one.table["sac.lr_schedule"] == "cosine"], one.config_columns)
    assert explore.stratify(one) is one
