"""IQM / bootstrap aggregation over seeds on hand-made result files."""

import json

import numpy as np
import pytest

from opera import stats


def test_iqm_drops_the_outer_quartiles():
    assert stats.iqm([0.0, 1.0, 2.0, 3.0, 100.0, -100.0, 1.5, 2.5]) == pytest.approx(1.75)


def test_bootstrap_ci_brackets_the_iqm():
    x = np.array([0.4, 0.5, 0.55, 0.6, 0.9])
    lo, hi = stats.bootstrap_ci(x)
    assert lo <= stats.iqm(x) <= hi and lo >= x.min() and hi <= x.max() and hi > lo
    assert stats.bootstrap_ci([0.3, 0.3]) == (0.3, 0.3)


def test_table_and_stage_table(tmp_path):
    dirs = []
    for s, em in enumerate([0.2, 0.4, 0.6]):
        d = tmp_path / f"s{s}"
        (d / "mapgrpo").mkdir(parents=True)
        res = {"sft": {"eval/em": em, "eval/f1": em + 0.1}, "mapgrpo": {"eval/em": em + 0.2}}
        (d / "results.json").write_text(json.dumps(res))
        lines = [{"step": 1, "eval/em": em}, {"step": 2, "x": 0.0}, {"step": 3, "eval/em": 1.0}]
        (d / "mapgrpo" / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines))
        dirs.append(str(d))
    table = stats.table(dirs, columns=("em", "f1"))
    assert "| sft | 3 | 0.400" in table and "| mapgrpo | 3 | 0.600" in table
    assert stats.eval_by_step(dirs, "mapgrpo") == {1: [0.2, 0.4, 0.6], 3: [1.0, 1.0, 1.0]}
    assert "| mapgrpo | 3 | 1.000" in stats.stage_table(dirs, ["mapgrpo"])
