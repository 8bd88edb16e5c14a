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
    assert summary["final_metrics"]["eval/token_acc"] > 0.95  # it learned: chance is 1/15


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


def test_every_recorded_result_names_the_commit_that_made_it():
    """Each JSON result under results/ carries ``made_at_commit`` (a full hash, ``+dirty`` when
    the run had uncommitted edits) and results/PROVENANCE.md lists its folder with that commit
    (written by ``python -m experiments.label_results``)."""
    import re

    from experiments import label_results

    results = os.path.join(ROOT, "results")
    table = open(os.path.join(results, "PROVENANCE.md")).read()
    checked = 0
    for dirpath, _, names in os.walk(results):
        for name in (n for n in names if n.endswith(".md") and dirpath != results):
            assert "Made at commit " in open(os.path.join(dirpath, name)).read(), (dirpath, name)
        for name in (n for n in names if n.endswith(".json")):
            data = json.load(open(os.path.join(dirpath, name)))
            if not isinstance(data, dict) or name.endswith(label_results.CONFIG_SUFFIXES):
                continue
            commit = data.get("made_at_commit", "")
            assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit), (dirpath, name, commit)
            folder = os.path.relpath(dirpath, ROOT)
            row = next(line for line in table.splitlines() if line.startswith(f"| `{folder}/` |"))
            assert label_results._short(commit) in row, (folder, commit, row)
            checked += 1
    assert checked >= 100  # every table of the README is under results/
