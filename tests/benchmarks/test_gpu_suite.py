"""``benchmarks/gpu_suite.py --dry-run``: every row runs (or is skipped with a reason) on CPU."""

from __future__ import annotations

import json

import pytest

from benchmarks import gpu_suite


def _check_scan_row(row):
    records = [r for r in row["records"] if r["status"] == "ok"]
    methods = {r["method"] for r in records}
    assert {"ref", "associative", "chunked", "pallas"} <= methods
    for r in records:
        assert r["time_ms"] > 0 and r["gbps"] > 0
        assert 0 < r["frac_hbm_bound"] and 0 < r["frac_exp_bound"]
        assert r["speedup_vs_ref"] > 0
    fwd = [r for r in records if r["mode"] == "fwd"]
    bwd = [r for r in records if r["mode"] == "fwd+bwd"]
    assert len(fwd) == len(bwd) == len(methods)
    # fwd+bwd counts twice the exps of fwd at the same shape.
    assert bwd[0]["exp_bound_ms"] == pytest.approx(2 * fwd[0]["exp_bound_ms"])


def test_dry_run_scan_and_decode_rows(tmp_path):
    """Default suite (~1 min on a loaded 2-core CPU): the in-process scan row and one
    subprocess row end to end, and a bad row name is rejected."""
    out = tmp_path / "suite.json"
    gpu_suite.main(["--dry-run", "--rows", "scan,decode", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["dry_run"] and set(result["rows"]) == {"scan", "decode"}
    _check_scan_row(result["rows"]["scan"])
    decode = result["rows"]["decode"]
    assert decode["status"] == "ok", decode
    assert decode["result"]["rows"][0]["mamba_recurrent_tok_s"] > 0
    with pytest.raises(SystemExit):
        gpu_suite.main(["--dry-run", "--rows", "scan,nope", "--out", str(out)])


@pytest.mark.slow
def test_dry_run_every_row(tmp_path):
    """Every row at tiny shapes; each is either ok or skipped with a one-line reason."""
    out = tmp_path / "suite.json"
    gpu_suite.main(["--dry-run", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"scan", *gpu_suite.SUBPROCESS_ROWS}
    _check_scan_row(rows["scan"])
    for name, row in rows.items():
        assert row["status"] in ("ok", "skipped"), name
        if row["status"] == "skipped":
            assert row["reason"] and "\n" not in row["reason"], name
