"""``python -m experiments.hypotheses`` end to end on fixture run directories (no training run):
report, graph files, the next-sweep config file (round trip through the experiment's config
schema) and the bounded ``--replicate`` launcher in dry-run and real (trivial command) modes."""

import json
import sys

import numpy as np
import pytest

from adarl import train as adarl_train
from experiments import hypotheses as cli
from experiments.configs import adarl as adarl_configs
from hypotheses import graph, load


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    base = json.loads(adarl_configs.get_config("cpu").to_json())
    for algo, shift in (("sac", 0.0), ("adarl", 3.0)):
        _write(root / "adarl" / f"cpu_{algo}" / "config.json", base | {"algo": algo})
        nominal = (10 + shift + rng.normal(size=base["num_seeds"])).tolist()
        _write(
            root / "adarl" / f"cpu_{algo}" / "summary.json", {"robustness": {"nominal": nominal}}
        )
    # a check rerun kept beside the sweep, left out by --exclude (it would add a third arm)
    _write(root / "adarl" / "recheck" / "cpu_rnac" / "config.json", base | {"algo": "rnac"})
    _write(root / "adarl" / "recheck" / "cpu_rnac" / "summary.json",
           {"robustness": {"nominal": [0.0] * base["num_seeds"]}})  # fmt: skip
    out = root / "out"
    results = cli.main(["--runs", str(root / "adarl"), "--out", str(out), "--reps", "100",
                        "--permutations", "100", "--replicate", "--dry_run", "--budget", "1",
                        "--exclude", "*/recheck"])  # fmt: skip
    return out, results


def test_report_and_graph_written(out):
    out, results = out
    text = (out / "report.md").read_text()
    assert (
        "Ranked hypotheses" in text and "`algo`=sac (vs adarl) decreases `robust/nominal`" in text
    )
    assert (out / "report.html").exists() and (out / "adarl_forest.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"].endswith("--exclude '*/recheck'")
    assert set(results[0].sweep.table["algo"]) == {"sac", "adarl"}
    assert len(summary["git"]["commit"]) == 40 and summary["sweeps"]["adarl"]["tests"] == len(
        results[0].relations
    )
    ranked = json.loads((out / "adarl_hypotheses.json").read_text())
    assert ranked[0]["id"] == results[0].hypotheses[0]["id"] and ranked[0]["statement"]
    g = graph.from_json((out / "adarl_graph.json").read_text())
    assert g.has_edge("algorithm:sac", "metric:robust/nominal")
    ids = set(results[0].sweep.table["run_id"])
    assert all(set(d["run_ids"]) <= ids for *_, d in g.edges(data=True))


def test_next_sweep_config_round_trip(out):
    out, _ = out
    record = json.loads((out / "adarl_next_sweep.json").read_text())
    mod = cli.load_config_file(str(out / "adarl_next_sweep.py"))
    for name, (module, preset, overrides) in record["cells"].items():
        assert module == "adarl" and preset in adarl_configs.PRESETS
        cfg = load.flatten(json.loads(mod.get_config(name).to_json()))
        ref = load.flatten(json.loads(adarl_configs.get_config(preset).to_json()))
        assert set(cfg) == set(ref)  # no field the experiment does not know
        assert all(cfg[k] == v for k, v in overrides.items())
        adarl_train.validate(mod.get_config(name))  # the trainer's own checks accept it
    assert {o["algo"] for _, _, o in record["cells"].values()} == {"sac", "adarl"}
    seeds = {o["seed"] for _, _, o in record["cells"].values()}
    assert min(seeds) >= 1  # the recorded runs used base seed 0


def test_replicate_dry_run_commands(out):
    out, _ = out
    record = json.loads((out / "adarl_next_sweep.json").read_text())
    assert len(record["launched"]) == 1 and record["launched"][0]["returncode"] is None
    cmd = record["commands"][0]
    assert cmd[1:3] == ["-m", "experiments.adarl"] and cmd[3] == "--config"
    assert cmd[4].endswith("adarl_next_sweep.py:" + next(iter(record["cells"])))
    assert cmd[5] == "--workdir"


def test_launch_respects_budget(tmp_path):
    marker = tmp_path / "ran"
    cmd = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"]
    done = cli.launch([cmd] * 3, budget=2, timeout=60, dry_run=False)
    assert [d["returncode"] for d in done] == [0, 0] and marker.read_text() == "xx"


def test_template_recorded_before_a_config_change_matches_its_preset(tmp_path):
    """A run whose config predates a field added to its preset (and has one since removed) is
    matched to that preset: the new field keeps the preset's value, the old one is dropped."""
    run = json.loads(adarl_configs.get_config("cpu").to_json())
    run["seed"] = 7
    run["sac"]["lr"] = 0.5  # a value the run changed
    del run["eval"][next(iter(run["eval"]))]  # a field added after the run
    run["obsolete_field"] = 1  # a field removed since
    _write(tmp_path / "config.json", run)
    module, preset, overrides = cli.resolve_template(str(tmp_path), {"algo": "sac", "gone": 2})
    assert (module, preset) == ("adarl", "cpu")
    assert overrides == {"sac.lr": 0.5, "algo": "sac"}


def test_bad_template_raises(tmp_path):
    _write(tmp_path / "config.json", {"unknown": 1})
    with pytest.raises(ValueError, match="no experiments/configs preset"):
        cli.resolve_template(str(tmp_path), {})


def test_large_sweeps_are_written_gzipped_and_read_back(out, tmp_path):
    """Over ``--gzip_over_mb`` a sweep's data files are ``.gz``; the graph round-trips through
    them, and ``--prior_graphs`` reads a gzipped graph (its claims are then no longer novel)."""
    import networkx as nx

    runs = out[0].parent / "adarl"
    gz = tmp_path / "gz"
    argv = ["--runs", str(runs), "--reps", "50", "--permutations", "50", "--split", "none"]
    (res,) = cli.main([*argv, "--out", str(gz), "--gzip_over_mb", "0"])
    names = {p.name for p in gz.iterdir()}
    assert {f"adarl_{n}.gz" for n in ("graph.json", "graph.graphml", "relations.json",
                                      "hypotheses.json")} <= names  # fmt: skip
    assert "adarl_relations.json" not in names
    back = graph.from_json(cli.read_text(str(gz / "adarl_graph.json.gz")))
    assert graph.to_json(back) == graph.to_json(res.graph)
    assert nx.read_graphml(gz / "adarl_graph.graphml.gz").number_of_edges() == len(back.edges)
    rels = json.loads(cli.read_text(str(gz / "adarl_relations.json.gz")))
    assert len(rels) == len(res.relations)
    (again,) = cli.main([*argv, "--out", str(tmp_path / "again"),
                         "--prior_graphs", str(gz / "adarl_graph.json.gz")])  # fmt: skip
    assert {h["novelty"] for h in res.hypotheses} != {h["novelty"] for h in again.hypotheses}
