"""Aggregation of per-seed OPERA results: IQM with a 95% percentile-bootstrap CI over seeds.

Each run directory holds ``results.json`` (``{arm: {metric: value}}``, written by
:func:`opera.train.train_and_evaluate`); :func:`table` turns a list of them into a markdown table
of EM/F1 overall and by hop count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
import scipy.stats

from harness.stats import iqm

ARM_ORDER = ("sft", "sft_single", "single", "mapgrpo", "no_gold", "no_rewrite")
COLUMNS = ("em", "f1", "em_hop2", "em_hop3", "em_hop4", "f1_hop2", "f1_hop3", "f1_hop4")


def bootstrap_ci(x: Sequence[float], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the IQM over seeds (``scipy.stats.bootstrap``);
    ``(x, x)`` for a single seed or identical values."""
    x = np.asarray(x, np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return float(x.mean()), float(x.mean())
    res = scipy.stats.bootstrap((x,), iqm, n_resamples=reps, method="percentile",
                                random_state=np.random.default_rng(seed), vectorized=False)  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def load(run_dirs: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """{arm: {metric: [value per run]}} from each run's ``results.json``."""
    out: dict[str, dict[str, list[float]]] = {}
    for d in run_dirs:
        with open(os.path.join(d, "results.json")) as f:
            res = json.load(f)
        for arm, metrics in res.items():
            for k, v in metrics.items():
                if k.startswith("eval/"):
                    out.setdefault(arm, {}).setdefault(k[5:], []).append(float(v))
    return out


def table(run_dirs: Sequence[str], columns: Sequence[str] = COLUMNS) -> str:
    """Markdown table: one row per arm, ``IQM [lo, hi]`` per column, and the seed count."""
    data = load(run_dirs)
    head = "| arm | n | " + " | ".join(columns) + " |"
    rows = [head, "|" + "---|" * (len(columns) + 2)]
    for arm in [a for a in ARM_ORDER if a in data] + sorted(set(data) - set(ARM_ORDER)):
        cells = []
        for c in columns:
            x = data[arm].get(c, [])
            lo, hi = bootstrap_ci(x) if x else (float("nan"), float("nan"))
            cells.append(f"{iqm(x):.3f} [{lo:.2f}, {hi:.2f}]" if x else "-")
        n = len(next(iter(data[arm].values())))
        rows.append(f"| {arm} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def eval_by_step(run_dirs: Sequence[str], arm: str, metric: str = "em") -> dict[int, list[float]]:
    """{update step: [value per run]} of ``eval/<metric>`` from each ``<run>/<arm>/metrics.jsonl``
    (with ``eval_every`` at the stage lengths this is the per-stage gain)."""
    out: dict[int, list[float]] = {}
    for d in run_dirs:
        with open(os.path.join(d, arm, "metrics.jsonl")) as f:
            for line in f:
                rec = json.loads(line)
                if f"eval/{metric}" in rec:
                    out.setdefault(int(rec["step"]), []).append(float(rec[f"eval/{metric}"]))
    return out


def stage_table(run_dirs: Sequence[str], arms: Sequence[str], metric: str = "em") -> str:
    """Markdown table of ``eval/<metric>`` (IQM [95% CI]) after each logged evaluation step."""
    rows = [f"| arm | step | {metric} |", "|---|---|---|"]
    for arm in arms:
        for step, x in sorted(eval_by_step(run_dirs, arm, metric).items()):
            lo, hi = bootstrap_ci(x)
            rows.append(f"| {arm} | {step} | {iqm(x):.3f} [{lo:.2f}, {hi:.2f}] (n={len(x)}) |")
    return "\n".join(rows)
