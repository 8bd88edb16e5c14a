"""``experiments.ssm_table``: the seed sweep end to end on the ``smoke`` preset (two seeds on two
workers, a failing run, a timed-out run, a run past the budget), the aggregation it writes, and a
dry check of every table preset."""

import json
import os
import subprocess
import sys
import time

import pytest

from experiments import cli
from experiments import ssm_table as st
from experiments.configs import ssm as ssm_configs
from harness.stats import bootstrap_ci, iqm
from ssm import lm, train

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("table"))
    jobs = [*st.plan(["smoke"], [0, 1]), st.Job("smoke", 2, ("train.lr=-1.0",))]
    opts = st.Options(out, workers=2, timeout_s=600)
    records = st.run_sweep(jobs, opts)
    table = st.aggregate(out, ["smoke"], [0, 1, 2], "test command", reps=200)
    return out, records, table


def test_runs_are_recorded_with_their_status(sweep):
    out, records, _ = sweep
    with open(os.path.join(out, st.RUNS_FILE)) as f:
        lines = [json.loads(line) for line in f]
    assert sorted((r["seed"], r["status"]) for r in lines) == [(0, "ok"), (1, "ok"), (2, "failed")]
    bad = next(r for r in lines if r["seed"] == 2)
    assert bad["rc"] == 2 and "train.lr" in bad["log_tail"], bad
    for r in lines:
        assert f"--config.seed={r['seed']}" in r["command"]
        assert os.path.exists(r["log"])
    assert len(records) == 3


def test_table_is_the_iqm_and_ci_of_the_finished_seeds(sweep):
    out, _, table = sweep
    (row,) = table["rows"]
    assert row["statuses"] == {0: "ok", 1: "ok", 2: "failed"}
    finals = []
    for s in (0, 1):
        with open(os.path.join(out, "runs", "smoke", f"seed{s}", "summary.json")) as f:
            finals.append(json.load(f)["final_metrics"]["eval/token_acc"])
    m = row["metrics"]["eval/token_acc"]
    assert m["n"] == 2 and m["values"] == finals
    assert m["iqm"] == pytest.approx(iqm(finals))
    assert m["ci95"] == pytest.approx(list(bootstrap_ci(finals, reps=200)))
    with open(os.path.join(out, "table.json")) as f:
        assert json.load(f)["rows"][0]["metrics"]["eval/token_acc"]["values"] == finals
    md = open(os.path.join(out, "table.md")).read()
    assert "| `smoke` | smoke | 2/3 |" in md and "`smoke` seed 2: failed" in md
    assert table["plots"] == ["other.png"] and os.path.exists(os.path.join(out, "other.png"))
    assert "cpu" in table["device"] and table["command"] == "test command"
    with open(os.path.join(out, "runs", "smoke", "seed0", "summary.json")) as f:
        ran = json.load(f)
    assert ran["device_kinds"] == ["cpu"] and f"runs at commit `{ran['git']['commit']}" in md
    # the control: smoke's selective copying (vocab 16) is chance over its 14 data tokens
    assert row["baseline"]["accuracy"] == pytest.approx(1 / 14)
    assert "| 0.071 |" in md and "the baseline 0.071 (chance" in row["verdict"]
    steps, values = st.curves(out, "smoke", [0, 1], "eval/token_acc")  # the budget column
    start = max(i for i, x in enumerate(steps) if x <= 0.75 * steps[-1])
    assert row["trend"]["delta"] == pytest.approx(list(values[:, -1] - values[:, start]))
    assert row["budget"] in md and f"({row['trend']['rising']}/2) |" in md
    walls = sorted(r["wall_s"] for r in lines_of(out) if r["status"] == "ok")
    assert row["wall_s_median"] == pytest.approx(sum(walls) / 2) and walls[0] > 0


def lines_of(out):
    with open(os.path.join(out, st.RUNS_FILE)) as f:
        return [json.loads(line) for line in f]


def test_curves_are_per_seed_on_gradient_steps(sweep):
    out, _, _ = sweep
    steps, values = st.curves(out, "smoke", [0, 1, 2], "eval/token_acc")
    c = ssm_configs.get_config("smoke").train
    want = [u * c.steps_per_update for u in range(1, c.num_updates + 1)
            if u % c.eval_every == 0 or u == c.num_updates]  # fmt: skip
    assert list(steps) == want and values.shape == (2, len(want))


def test_finished_run_is_reused_and_aggregate_only_rebuilds_the_table(sweep):
    out, _, table = sweep
    opts = st.Options(out)
    t = time.time()
    rec = st.run_job(st.Job("smoke", 0, ()), opts, time.monotonic(), st.worker_env(opts))
    assert rec["status"] == "ok" and rec["reused"] and time.time() - t < 5
    with open(os.path.join(out, st.RUNS_FILE), "a") as f:
        f.write(json.dumps(rec) + "\n")  # as run_sweep records it
    assert st.read_records(out)[("smoke", 0)]["wall_s"] > 0  # the run's own record is kept
    os.remove(os.path.join(out, "table.md"))
    cmd = [sys.executable, "-m", "experiments.ssm_table", "--rows=smoke", "--seeds=0,1,2",
           f"--out={out}", "--aggregate_only", "--bootstrap_reps=200"]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    with open(os.path.join(out, "table.json")) as f:
        again = json.load(f)
    assert again["rows"][0]["metrics"] == json.loads(json.dumps(table["rows"][0]["metrics"]))
    assert os.path.exists(os.path.join(out, "table.md"))


def test_budget_skips_and_timeout_kills(tmp_path):
    out = str(tmp_path)
    os.makedirs(os.path.join(out, "logs"))
    late = st.Options(out, budget_s=1.0)
    rec = st.run_job(st.Job("smoke", 0, ()), late, time.monotonic() - 5, st.worker_env(late))
    assert rec["status"] == "skipped" and not os.path.exists(os.path.join(out, "runs"))
    short = st.Options(out, timeout_s=1.0)
    rec = st.run_job(st.Job("smoke", 1, ()), short, time.monotonic(), st.worker_env(short))
    assert rec["status"] == "timeout" and rec["rc"] is None


def test_dashed_flag_names_are_accepted():
    argv = ["prog", "--steps-scale=0.5", "--budget-s", "3", "--set", "a.b-c=1", "--aggregate-only"]
    assert st.underscore_flags(argv) == [
        "prog",
        "--steps_scale=0.5",
        "--budget_s",
        "3",
        "--set",
        "a.b-c=1",
        "--aggregate_only",
    ]


def test_worker_env_shares_the_gpu():
    env = st.worker_env(st.Options("/x", workers=12))
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert float(env["XLA_PYTHON_CLIENT_MEM_FRACTION"]) * 12 <= 0.9 + 1e-9
    assert env["JAX_COMPILATION_CACHE_DIR"] == "/x/jax_cache"


def _metrics(values):
    lo, hi = bootstrap_ci(values, reps=200)
    return {"n": len(values), "iqm": iqm(values), "ci95": [lo, hi], "values": values}


def test_verdict_words_follow_the_ci():
    row = st.ROWS["sc256_mamba"]
    assert "' reproduced" in st.verdict(row, {"eval/token_acc": _metrics([0.95, 0.97, 0.99])})
    assert "not reproduced" in st.verdict(row, {"eval/token_acc": _metrics([0.3, 0.4, 0.5])})
    assert "inconclusive" in st.verdict(row, {"eval/token_acc": _metrics([0.5, 0.95, 0.99])})
    lti = st.ROWS["sc256_s4d"]  # a "<=" claim
    assert "' reproduced" in st.verdict(lti, {"eval/token_acc": _metrics([0.3, 0.4, 0.5])})
    assert "no finished run" in st.verdict(row, {"eval/token_acc": {"n": 0}})
    mha = st.ROWS["ind256_transformer"]  # "does not extrapolate" needs the training length solved
    chance = {"eval/token_acc": _metrics([0.1, 0.1, 0.1]), "eval/token_acc_L4096": _metrics([0.1])}
    assert "not applicable" in st.verdict(mha, chance)
    solved = {**chance, "eval/token_acc": _metrics([1.0, 1.0, 1.0])}
    assert "not applicable" not in st.verdict(mha, solved)
    assert "acc @4096 <= 0.5)' reproduced" in st.verdict(mha, solved)


def test_baseline_is_the_recorded_runs_task(tmp_path):
    out = str(tmp_path)
    assert st.baseline(out, "mqar_kv8_mamba", [0])["accuracy"] == pytest.approx(0.33973, abs=1e-5)
    config = ssm_configs.get_config("mqar_kv8_mamba")
    config.task.kwargs.num_kv_pairs = 16  # as --set task.kwargs.num_kv_pairs=16 would run it
    wd = st.workdir(out, st.Job("mqar_kv8_mamba", 1, ()))
    os.makedirs(wd)
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(config.to_dict(), f)
    assert st.baseline(out, "mqar_kv8_mamba", [0, 1])["accuracy"] == pytest.approx(0.21130, 1e-4)


def test_versus_baseline_reads_the_ci():
    base = {"accuracy": 0.34, "rule": "guess"}
    assert st.versus_baseline(_metrics([0.5, 0.6, 0.7]), base).startswith("above the baseline")
    assert st.versus_baseline(_metrics([0.30, 0.34, 0.38]), base).startswith("at the baseline")
    assert st.versus_baseline(_metrics([0.1, 0.2, 0.3]), base).startswith("below the baseline")
    assert st.versus_baseline(_metrics([0.35]), base).endswith("one seed, no CI")  # CI [x, x]
    assert st.versus_baseline({"n": 0}, base) == st.versus_baseline(_metrics([0.5]), None) == ""


def _fake_run(out, preset, seed, steps, values, steps_per_update=100, **summary):
    """A finished workdir as ``experiments.ssm`` leaves it, reduced to what the table reads."""
    wd = st.workdir(out, st.Job(preset, seed, ()))
    os.makedirs(wd)
    config = ssm_configs.get_config("smoke").to_dict()
    config["train"]["steps_per_update"] = steps_per_update
    with open(os.path.join(wd, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(wd, "summary.json"), "w") as f:
        json.dump({"final_metrics": {"eval/token_acc": values[-1]}, **summary}, f)
    with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
        for u, v in zip(steps, values, strict=True):
            f.write(json.dumps({"step": u, "eval/token_acc": v, "train/loss": 1.0}) + "\n")


def test_trend_is_the_change_over_the_last_quarter(tmp_path):
    out = str(tmp_path)
    updates = [5, 10, 15, 20, 25, 30, 35, 40]  # logged every 500 gradient steps up to 4000
    _fake_run(out, "smoke", 0, updates, [0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.58, 0.6])  # rising
    _fake_run(out, "smoke", 1, updates, [0.1, 0.13, 0.14, 0.14, 0.14, 0.14, 0.145, 0.14])  # flat
    _fake_run(out, "smoke", 2, updates, [0.3, 0.5, 0.6, 0.6, 0.6, 0.66, 0.6, 0.52])  # fell
    t = st.trend(out, "smoke", [0, 1, 2, 3], "eval/token_acc")  # seed 3 never ran
    assert (t["from_step"], t["to_step"]) == (3000, 4000)
    assert t["delta"] == pytest.approx([0.05, 0.0, -0.14])
    assert (t["rising"], t["falling"], t["median"]) == (1, 1, pytest.approx(0.0))
    text = st.budget_sentence(t)
    assert "steps 3000-4000" in text and "+0.050, +0.000, -0.140" in text
    assert "rising on 1, falling on 1 and within ±0.02 on 1 of 3 seeds; the row needs" in text
    flat = st.budget_sentence(st.trend(out, "smoke", [1], "eval/token_acc"))
    assert flat.endswith("rising on 0, falling on 0 and within ±0.02 on 1 of 1 seed.")
    fell = st.budget_sentence(st.trend(out, "smoke", [1, 2], "eval/token_acc"))
    assert "falling on 1 and within ±0.02 on 1 of 2 seeds." in fell and "needs" not in fell
    # 3/4 of the last step falls between two logged steps: the earlier one is the start
    _fake_run(out, "other", 0, [1, 2, 3, 4, 5], [0.0, 0.1, 0.2, 0.3, 0.4])
    assert st.trend(out, "other", [0], "eval/token_acc")["from_step"] == 300
    _fake_run(out, "one", 0, [7], [0.5])  # one logged step: no trend
    assert st.trend(out, "one", [0], "eval/token_acc") is None and st.budget_sentence(None) == ""


def test_table_names_the_runs_commits_and_their_gpu(tmp_path):
    """The header names the commits the runs recorded and the GPU they ran on (its name from
    the run's ``summary.json``), not the machine or checkout that aggregates them."""
    out = str(tmp_path)
    gpu = {"backend": "gpu", "devices": ["cuda:0"], "device_kinds": ["NVIDIA H200"]}
    _fake_run(out, "smoke", 0, [1, 2], [0.2, 0.3], git={"commit": "abc", "dirty": False}, **gpu)
    _fake_run(out, "smoke", 1, [1, 2], [0.2, 0.4], git={"commit": "def", "dirty": True}, **gpu)
    table = st.aggregate(out, ["smoke"], [0, 1], "cmd", reps=50)
    assert table["device"] == "gpu: cuda:0 (NVIDIA H200)"
    assert table["run_commits"] == ["abc", "def (dirty)"]
    header = open(os.path.join(out, "table.md")).read().splitlines()[2]
    assert header.startswith("runs at commits `abc`, `def (dirty)` (each run's `summary.json`)")
    assert f"aggregated at `{table['commit']}`" in header and "by `cmd`" in header


def test_plan_order_and_seed_caps():
    jobs = st.plan(st.resolve_rows(["all"]), range(7))  # every group stops at 5 seeds
    groups = [st.ROWS[j.preset].group for j in jobs]
    assert groups == sorted(groups, key=list(st.GROUPS).index)  # priority order
    assert [j.seed for j in jobs[:5]] == [0] * 5  # seed by seed within a group
    count = {g: groups.count(g) for g in set(groups)}
    assert count == {"selective_copying": 25, "induction": 20, "mqar": 20, "listops": 15}
    assert max(j.seed for j in jobs) == 4
    assert {j.preset for j in jobs} == set(st.ROWS)


@pytest.mark.parametrize("preset", sorted(st.ROWS))
def test_every_table_preset_validates_and_its_command_parses(preset):
    config = ssm_configs.get_config(preset)
    train.validate_config(config)
    layers = lm.validate(config.model).layer_names()
    want = {"sc256": 4000, "ind256": 6000, "mqar": 3000, "listops128": 3000}[preset.split("_")[0]]
    assert config.train.num_updates * config.train.steps_per_update == want
    assert config.model.scan_method == ("chunked" if preset.startswith("sc256") else "ref")
    if "transformer" in layers:  # an f32 attention score tensor at 16384 is 34 GB per batch of 8
        assert max(config.eval.lengths, default=0) <= 4096
    # Every column and curve of the row's group is a metric the run writes: an extra length
    # ``_L<n>`` must be evaluated (attention stops at 4096), the rest come from every run.
    group = st.GROUPS[st.ROWS[preset].group]
    for metric in group.columns + group.curves:
        if "_L" in metric:
            n = int(metric.rsplit("_L", 1)[1])
            assert n in config.eval.lengths or ("transformer" in layers and n > 4096), metric
        else:
            assert metric.split("/")[0] in ("eval", "train"), metric
    if preset.startswith("ind256"):  # evaluating at 16384 costs ~1 min on a CPU: 3 in 6000 steps
        assert config.train.num_updates // config.train.eval_every == 3
    for scale in (1.0, 0.01):
        job = st.Job(preset, 3, st.scaled_overrides(preset, scale))
        argv = st.command(job, "/tmp/o")[3:]
        cli.precheck(argv, "", None)  # every --config.<field> exists in the preset
