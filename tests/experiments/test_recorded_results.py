"""A recorded result reproduces at HEAD (issue 22): the quickstart run, compared exactly.

``results/quickstart/`` holds the ``metrics.jsonl`` and ``summary.json`` (with the git commit
that made them) of ``python -m experiments.ssm --config experiments/configs/ssm.py:quickstart``.
Same config and seed give the same numbers on the same machine, so every logged value must match
bit for bit; a change in the code's floating-point order shows up here first.
"""

import json
import os
import subprocess
import sys

import pytest

import harness

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDED = os.path.join(ROOT, "results", "quickstart")


def test_recorded_quickstart_names_its_commit():
    summary = json.load(open(os.path.join(RECORDED, "summary.json")))
    assert len(summary["git"]["commit"]) == 40 and summary["git"]["dirty"] is False
    assert summary["final_metrics"]["eval/token_acc"] > 0.95  # it learned: chance is 1/16


@pytest.mark.slow
def test_quickstart_reproduces_the_recorded_metrics_exactly(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "experiments.ssm",
        "--config=experiments/configs/ssm.py:quickstart",
        f"--workdir={tmp_path}",
    ]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    assert harness.read_metrics(str(tmp_path)) == harness.read_metrics(RECORDED)
