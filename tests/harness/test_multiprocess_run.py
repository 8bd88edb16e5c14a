"""``harness.run_experiment`` in two JAX processes sharing one workdir (issue 23): process 0 alone
writes the config, metrics, plots and summary; both save checkpoint shards; a run killed midway
resumes in two processes with each step logged once; a launch on another coordinator address is
the same run; a different config is refused by process 0 and every process stops.

Each launch is two processes of ``multiprocess_run_script.py`` (~5 s: imports, no real compile).
"""

import json
import os

import pytest

from tests import devices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "tests", "harness", "multiprocess_run_script.py")


def launch(workdir, scale=0.5, stop_after=None):
    """Both processes of one launch; ``[(returncode, stdout, stderr)]`` by process id."""
    port = str(devices.free_port())
    extra = [] if stop_after is None else [str(stop_after)]
    return devices.run_processes(
        lambda pid: [SCRIPT, str(workdir), port, str(pid), str(scale), *extra], timeout=300
    )


def metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def expected_sums(n, scale=0.5):
    w, sums = 0.0, []
    for _ in range(n):
        w = scale * w + 1.0
        sums.append(4 * w)
    return sums


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("mp") / "run"
    first = launch(workdir, stop_after=2)
    after_kill = metrics(workdir)
    summary_after_kill = os.path.exists(workdir / "summary.json")
    second = launch(workdir)
    return workdir, first, after_kill, summary_after_kill, second


def test_a_killed_two_process_run_resumes_and_logs_each_step_once(killed_then_resumed):
    workdir, first, after_kill, summary_after_kill, second = killed_then_resumed
    for code, _out, err in first + second:
        assert code == 0, err[-3000:]
    assert [r["step"] for r in after_kill] == [1, 2] and not summary_after_kill
    assert "resuming from the checkpoint at update 2/4" in second[0][1]
    rows = metrics(workdir)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]  # written by process 0 only, once
    assert [r["train/sum"] for r in rows] == pytest.approx(expected_sums(4))
    with open(workdir / "summary.json") as f:
        summary = json.load(f)
    assert summary["resumed_from"] == 2 and len(summary["devices"]) == 2
    assert summary["final_metrics"]["train/sum"] == pytest.approx(expected_sums(4)[-1])
    with open(workdir / "config.json") as f:
        assert json.load(f)["parallel"]["process_id"] == 0  # process 0's config
    assert (workdir / "sum.png").exists()
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3", "4"]
    assert not [n for n in os.listdir(workdir) if n.endswith(".tmp")]


def test_a_finished_two_process_run_is_not_redone(killed_then_resumed):
    workdir = killed_then_resumed[0]
    before = metrics(workdir)
    again = launch(workdir)  # another coordinator port: the same run
    for code, _out, err in again:
        assert code == 0, err[-3000:]
    assert "holds this finished run" in again[0][1] and "holds this finished run" in again[1][1]
    assert metrics(workdir) == before


def test_a_different_config_is_refused_by_process_0_and_every_process_stops(
    killed_then_resumed,
):
    workdir = killed_then_resumed[0]
    before = sorted(os.listdir(workdir))
    (c0, _, e0), (c1, _, e1) = launch(workdir, scale=0.25)
    assert (c0, c1) == (2, 2)
    assert "holds a run with a different config (1 field: scale: 0.5 -> 0.25)" in e0
    assert "was refused by process 0" in e1
    assert "Traceback" not in e0 + e1
    assert sorted(os.listdir(workdir)) == before


@pytest.mark.slow  # three JAX processes compiling the SSM LM: ~90 s on the 2-core machine
def test_ssm_cli_in_two_processes_equals_one_process(tmp_path):
    """``python -m experiments.ssm`` (smoke) as 2 processes x 1 CPU device into one workdir
    writes each step once, with the metrics of the same run in one process with 2 devices."""
    base = ["-m", "experiments.ssm", "--config", "experiments/configs/ssm.py:smoke"]
    port = str(devices.free_port())
    outs = devices.run_processes(
        lambda pid: [*base, "--workdir", str(tmp_path / "multi"),
                     f"--config.parallel.coordinator_address=127.0.0.1:{port}",
                     "--config.parallel.num_processes=2", f"--config.parallel.process_id={pid}"],
    )  # fmt: skip
    single = devices.run_python([*base, "--workdir", str(tmp_path / "single")], devices=2)
    for code, _out, err in outs:
        assert code == 0, err[-3000:]
    assert single.returncode == 0, single.stderr[-3000:]
    assert "process 1 finished" in outs[1][1]
    multi, ref = metrics(tmp_path / "multi"), metrics(tmp_path / "single")
    assert [r["step"] for r in multi] == [r["step"] for r in ref] == [1, 2, 3]
    for a, b in zip(multi, ref, strict=True):
        assert a.keys() == b.keys()
        assert [a[k] for k in a] == pytest.approx([b[k] for k in a], rel=1e-5, abs=1e-6)
