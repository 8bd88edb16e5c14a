"""``experiments.label_results``: which commit a results file is labelled with, and the closing
line of a results table (replaced, never stacked, when the table is aggregated again)."""

import json

from experiments import label_results as lr


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_an_aggregated_table_is_labelled_with_its_own_commit(tmp_path):
    table = tmp_path / "table" / "table.json"
    _write(table, {"commit": "abc", "dirty": False, "rows": []})
    assert lr.label(str(table)) == ("abc", lr.TABLE)
    assert lr.label(str(tmp_path / "table" / "table.md")) == ("abc", lr.TABLE)
    _write(table, {"commit": "abc", "dirty": True})
    assert lr.label(str(table))[0] == "abc+dirty"
    _write(tmp_path / "table" / "summary.json", {"git": {"commit": "run", "dirty": False}})
    assert lr.label(str(table)) == ("run", lr.RUN)  # a run's own commit comes first


def test_markdown_label_replaces_an_older_one(tmp_path):
    _write(tmp_path / "table.json", {"commit": "0123456789", "dirty": False})
    md = tmp_path / "table.md"
    md.write_text("# T\n\n| a |\n\n_Made at commit 69efc3b (added to the repository)._\n")
    assert lr._label_markdown(str(md), write=False) and "69efc3b" in md.read_text()  # --check
    assert lr._label_markdown(str(md), write=True)
    assert md.read_text() == f"# T\n\n| a |\n\n_Made at commit 0123456 ({lr.TABLE})._\n"
    assert not lr._label_markdown(str(md), write=True)  # labelled: unchanged
    fresh = tmp_path / "fresh.md"
    fresh.write_text("# T\n")
    assert lr._label_markdown(str(fresh), write=True)
    assert fresh.read_text() == f"# T\n\n_Made at commit 0123456 ({lr.TABLE})._\n"
