"""Readers from raw result files to one per-replicate table (PROTEUS's "raw data files", §2.2).

Two layouts are read, each by a registered loader:

* ``harness_run``: a run directory of ``harness.run.run_experiment`` (``config.json``,
  ``summary.json``, optional ``metrics.jsonl``). Runs that vmap ``num_seeds`` seeds log only the
  mean and ``/std`` over seeds per step, so their replicates come from the per-seed arrays the
  adarl evaluation writes (``summary.json:robustness`` and ``windtunnel.json``); a multi-seed run
  without such arrays yields one aggregate row with ``seed == "mean"``, reported and excluded
  from tests. Single-seed runs give one replicate from their learning curve (final-k mean and
  area under the curve) or, without a curve, from ``summary.json:final_metrics``.
* ``sweep_table``: a ``results.json`` list of records ``{..factors.., "seeds": [...],
  "columns": [...], "final": [[...] per seed], "start": optional}`` (``experiments.flowrl_sweep``).
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from harness.registry import Registry
from hypotheses.types import Sweep

Rows = list[dict[str, Any]]
LOADERS: Registry[Callable[[str, str, int], tuple[Rows, list[str]]]] = Registry("loader")
AGGREGATE_SEED = "mean"


def _read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"a.b": value}``; lists become tuples so they can be levels."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, name + "."))
        else:
            out[name] = tuple(v) if isinstance(v, list) else v
    return out


def curve_metrics(records: list[dict[str, float]], final_k: int) -> dict[str, float]:
    """Per-metric final-k mean (``@final``) and step-normalised area under the curve (``@auc``)."""
    frame = pd.DataFrame(records).sort_values("step")
    out = {}
    for col in frame.columns:
        if col == "step" or col.endswith("/std"):
            continue
        s = frame[["step", col]].dropna()
        if s.empty:
            continue
        out[f"{col}@final"] = float(s[col].tail(final_k).mean())
        steps, vals = s["step"].to_numpy(float), s[col].to_numpy(float)
        span = steps[-1] - steps[0]
        out[f"{col}@auc"] = float(np.trapezoid(vals, steps) / span) if span > 0 else float(vals[0])
    return out


def per_seed_arrays(run_dir: str, summary: dict[str, Any]) -> dict[str, list[float]]:
    """Per-seed metric arrays a vmapped adarl run leaves (robustness + wind tunnel)."""
    arrays: dict[str, list[float]] = {}
    rob = summary.get("robustness", {})
    for key in ("nominal", "grid_mean", "grid_min"):
        if isinstance(rob.get(key), list):
            arrays[f"robust/{key}"] = rob[key]
    for key, vals in rob.get("final_ranks", {}).items():
        arrays[f"{key}@final"] = vals
    wt_path = os.path.join(run_dir, "windtunnel.json")
    if os.path.exists(wt_path):
        wt = _read_json(wt_path)
        for key in ("worst_return", "cvar"):
            if isinstance(wt.get(key), list):
                arrays[f"windtunnel/{key}"] = wt[key]
    return arrays


@LOADERS.register("harness_run")
def load_harness_run(run_dir: str, run_id: str, final_k: int) -> tuple[Rows, list[str]]:
    config = flatten(_read_json(os.path.join(run_dir, "config.json")))
    summary_path = os.path.join(run_dir, "summary.json")
    summary = _read_json(summary_path) if os.path.exists(summary_path) else {}
    num_seeds = int(config.get("num_seeds", 1) or 1)
    base = str(config.get("seed", 0))
    arrays = {k: v for k, v in per_seed_arrays(run_dir, summary).items() if len(v) == num_seeds}
    if num_seeds > 1 and arrays:
        return [
            {**config, "run_id": f"{run_id}#{i}", "seed": f"{base}/{i}"}
            | {k: float(v[i]) for k, v in arrays.items()}
            for i in range(num_seeds)
        ], list(config)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if num_seeds == 1 and os.path.exists(metrics_path):
        with open(metrics_path) as f:
            metrics = curve_metrics([json.loads(line) for line in f if line.strip()], final_k)
    else:
        final = summary.get("final_metrics", {})
        metrics = {f"{k}@final": float(v) for k, v in final.items() if not k.endswith("/std")}
    seed = base if num_seeds == 1 else AGGREGATE_SEED
    return [{**config, "run_id": run_id, "seed": seed, **metrics}], list(config)


@LOADERS.register("sweep_table")
def load_sweep_table(path: str, run_id: str, final_k: int) -> tuple[Rows, list[str]]:
    del final_k  # the table already holds final values
    rows, factors = [], []
    for i, rec in enumerate(_read_json(path)):
        levels = {k: v for k, v in rec.items() if isinstance(v, str | int | float | bool)}
        factors += [k for k in levels if k not in factors]
        for j, seed in enumerate(rec["seeds"]):
            row = {**levels, "run_id": f"{run_id}#{i}/seed{seed}", "seed": str(seed)}
            for c, col in enumerate(rec["columns"]):
                row[f"{col}@final"] = float(rec["final"][j][c])
                if "start" in rec:
                    row[f"{col}@gain"] = float(rec["final"][j][c] - rec["start"][j][c])
            rows.append(row)
    return rows, factors


def is_sweep_table(path: str) -> bool:
    if not path.endswith(".json"):
        return False
    data = _read_json(path)
    return isinstance(data, list) and all(
        isinstance(r, dict) and {"seeds", "columns", "final"} <= set(r) for r in data
    )


def excluded(path: str, exclude: Sequence[str]) -> bool:
    """Whether ``path`` (as walked from the root given on the command line) matches one of the
    ``fnmatch`` patterns in ``exclude`` (``*`` also matches ``/``)."""
    return any(fnmatch.fnmatch(path, pattern) for pattern in exclude)


def discover(root: str, exclude: Sequence[str] = ()) -> Iterator[tuple[str, str]]:
    """(loader name, path) for every readable source under ``root``, in sorted order.

    A directory or file matching a pattern of ``exclude`` is skipped with everything below it:
    runs recorded under a sweep that are not part of its design (a truncated rerun that checks
    reproducibility would otherwise enter as a level of ``train.num_updates``)."""
    skipped: list[str] = []  # excluded directories; sorted() has walked the tree already
    for dirpath, _, filenames in sorted(os.walk(root)):
        if any(dirpath.startswith(d + os.sep) for d in skipped) or excluded(dirpath, exclude):
            skipped.append(dirpath)
            continue
        if "config.json" in filenames:
            yield "harness_run", dirpath
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            if not excluded(path, exclude) and is_sweep_table(path):
                yield "sweep_table", path


def load_sweep(
    root: str, name: str | None = None, final_k: int = 3, exclude: Sequence[str] = ()
) -> Sweep:
    """Reads every source under ``root`` (but ``exclude``) into one :class:`Sweep` (run ids
    relative to root)."""
    return _load(root, list(discover(root, exclude)), name, final_k)


def load_sweeps(root: str, final_k: int = 3, exclude: Sequence[str] = ()) -> list[Sweep]:
    """One :class:`Sweep` per kind of source under ``root``: named after ``root`` when there is
    one kind, ``<root>-<loader>`` otherwise. The kinds name their columns differently (a harness
    run's config fields are dotted, ``rl.algo``; a sweep table's are its record keys, ``algo``),
    so a table mixing them has no factor that every row has and yields no test."""
    sources = list(discover(root, exclude))
    kinds = list(dict.fromkeys(loader for loader, _ in sources))
    if len(kinds) <= 1:
        return [_load(root, sources, None, final_k)]
    base = os.path.basename(os.path.abspath(root).rstrip("/"))
    return [_load(root, [s for s in sources if s[0] == k], f"{base}-{k}", final_k) for k in kinds]


def _load(root: str, sources: list[tuple[str, str]], name: str | None, final_k: int) -> Sweep:
    rows: Rows = []
    config_cols: list[str] = []
    ids = []
    base = os.path.dirname(os.path.abspath(root).rstrip("/"))
    for loader, path in sources:
        run_id = os.path.relpath(os.path.abspath(path), base)
        new_rows, cols = LOADERS.get(loader)(path, run_id, final_k)
        for r in new_rows:
            r.update(run_dir=path, loader=loader)
        rows += new_rows
        config_cols += [c for c in cols if c not in config_cols]
        ids.append(run_id)
    table = pd.DataFrame(rows)
    notes = []
    if len(table) and (table["seed"] == AGGREGATE_SEED).any():
        agg = sorted(table.loc[table["seed"] == AGGREGATE_SEED, "run_id"])
        notes.append(f"aggregate-only runs (no per-seed values; excluded from tests): {agg}")
        table = table[table["seed"] != AGGREGATE_SEED].reset_index(drop=True)
    sweep_name = name or os.path.basename(os.path.abspath(root).rstrip("/"))
    return Sweep(sweep_name, table, tuple(config_cols), tuple(ids), tuple(notes))
