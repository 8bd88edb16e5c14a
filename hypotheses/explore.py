"""Module 1, exploration (SAFETY_AND_ANALYSIS.md §2.2): schema, coverage, research directions.

``stratify`` makes rows measured under different protocols different tasks; ``infer_schema``
decides which columns are factors (with a kind), metrics, the seed and the task; ``coverage`` and
``missingness`` describe the design; ``directions`` lists the testable (factor -> metric) and
(factor x factor -> metric) questions within each task.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd

from hypotheses import types as T

ID_COLUMNS = ("run_id", "run_dir", "loader", "seed")
SEED_NAMES = ("seed", "seeds", "replicate")
STRATUM = "task+protocol"  # the task column ``stratify`` adds
TASK_NAMES = (STRATUM, "env.name", "task", "env", "environment", "task.name", "preset", "dataset")
# Config fields that define what a metric measures: the environment, the task and the evaluation
# (a robustness grid, a sequence length) ...
PROTOCOL_PREFIXES = ("env.", "task.", "eval.")
# ... except those that only set how many samples estimate it or when (their last name part ends
# with one of these): they change the noise, not the quantity.
SAMPLING_SUFFIXES = ("batch_size", "num_batches", "every", "episodes", "lengths")
MAX_LEVELS = 6  # a numeric column with at most this many repeated values is a factor


def level_key(v) -> str:
    return repr(v) if isinstance(v, tuple) else str(v)


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def factor_kind(s: pd.Series) -> str:
    """binary (2 levels), categorical (>2 non-numeric), ordinal (3..5 numeric), continuous."""
    k = s.map(level_key).nunique()
    if k == 2:
        return T.BINARY
    if not _is_numeric(s):
        return T.CATEGORICAL
    return T.ORDINAL if k <= 5 else T.CONT


def _looks_like_factor(s: pd.Series) -> bool:
    """Heuristic for tables without config provenance: few, repeated values."""
    if not _is_numeric(s):
        return True
    counts = s.value_counts()
    return len(counts) <= MAX_LEVELS and counts.min() >= 2 and len(counts) < len(s) / 2


def _aliases(df: pd.DataFrame, cols: list[str], prefer: tuple[str, ...]) -> dict[str, list[str]]:
    """Groups columns that are one-to-one over the rows; the representative is kept."""
    codes = {c: df[c].map(level_key) for c in cols}
    groups: dict[str, list[str]] = {}
    for c in sorted(cols, key=lambda c: (c not in prefer, c.count("."), len(c), c)):
        for rep in groups:
            pair = pd.DataFrame({"a": codes[rep], "b": codes[c]}).drop_duplicates()
            if len(pair) == pair["a"].nunique() == pair["b"].nunique():
                groups[rep].append(c)
                break
        else:
            groups[c] = []
    return groups


def _is_protocol(column: str) -> bool:
    return column.startswith(PROTOCOL_PREFIXES) and not column.endswith(SAMPLING_SUFFIXES)


def stratify(sweep: T.Sweep) -> T.Sweep:
    """Rows of one task whose protocol fields differ become different tasks.

    A metric measured under another protocol is another quantity: the grid minimum over pole
    mass x gear 0.25-4x is not the one over cart x pole mass 0.5-2x, so comparing the runs of two
    presets of one environment would credit every field the presets differ in (a learning-rate
    schedule) with the grid's effect. Protocol fields are the config columns under
    ``PROTOCOL_PREFIXES`` that are not sample sizes (``SAMPLING_SUFFIXES``). When some vary
    within a task (the first ``TASK_NAMES`` config column; the whole sweep without one), they and
    the task column are replaced by one column ``STRATUM`` whose value names them all, e.g.
    ``"CartpoleSwingup | eval.grid_scales=(0.25, 0.5, 1.0, 2.0, 4.0)"``; the sweep is returned
    unchanged otherwise. Factors are then compared only within a protocol (and across protocols
    only through the factor x task aggregate, on task-normalised values)."""
    df, cols = sweep.table, sweep.config_columns
    task = next((c for c in TASK_NAMES if c in cols and c in df.columns), None)
    keys = df[task].map(level_key) if task else pd.Series("", index=df.index)
    varying = [c for c in cols if c in df.columns and _is_protocol(c) and c != task
               and df[c].map(level_key).groupby(keys).nunique().max() > 1]  # fmt: skip
    if not varying:
        return sweep
    labels = df[varying].apply(lambda r: ", ".join(f"{c}={level_key(r[c])}" for c in varying), 1)
    stratum = keys + " | " + labels if task else labels
    folded = [*varying, *([task] if task else [])]
    table = df.drop(columns=folded).assign(**{STRATUM: stratum})
    note = f"tasks split by protocol: {', '.join(folded)} folded into '{STRATUM}'"
    return dataclasses.replace(
        sweep,
        table=table,
        config_columns=(STRATUM, *(c for c in cols if c not in folded)),
        notes=(*sweep.notes, note),
    )


def infer_schema(df: pd.DataFrame, config_columns: tuple[str, ...] | None = None) -> T.Schema:
    """Roles of ``df``'s columns. Config columns (when known) are factor candidates; otherwise
    non-numeric or few-valued repeated numeric columns are. Constant columns are dropped, and
    columns one-to-one with another factor are kept only as its aliases (``algo`` preferred)."""
    cols = [c for c in df.columns if c not in ID_COLUMNS and df[c].notna().all()]
    seed = next((c for c in SEED_NAMES if c in df.columns), None)
    if config_columns is None:
        candidates = [c for c in cols if _looks_like_factor(df[c])]
    else:
        candidates = [c for c in cols if c in config_columns and c not in SEED_NAMES]
    varying = [c for c in candidates if df[c].map(level_key).nunique() > 1]
    constants = tuple(c for c in candidates if c not in varying)
    task = next((c for c in TASK_NAMES if c in varying), None)
    groups = _aliases(df, varying, prefer=(task or "", "algo", "rl.algo"))
    aliases = {k: tuple(v) for k, v in groups.items()}
    factors = {c: factor_kind(df[c]) for c in groups if c != task}
    # A config field some runs lack (NaN there) is not a factor candidate; it is not a metric.
    not_metrics = set(ID_COLUMNS) | set(candidates) | set(config_columns or ())
    metric_cols = [c for c in df.columns if c not in not_metrics]
    metrics = tuple(
        c
        for c in metric_cols
        if _is_numeric(df[c]) and df[c].notna().sum() >= 2 and np.nanstd(df[c].to_numpy(float)) > 0
    )
    return T.Schema(factors, metrics, seed, task, aliases, constants)


def coverage(df: pd.DataFrame, schema: T.Schema) -> pd.DataFrame:
    """Replicates per (task, factor, level): the design's coverage table."""
    rows = []
    tasks = df.groupby(schema.task) if schema.task else [("", df)]
    for task, sub in tasks:
        for f in schema.factors:
            for level, cell in sub.groupby(sub[f].map(level_key)):
                rows.append({"task": task, "factor": f, "level": level, "n": len(cell)})
    return pd.DataFrame(rows, columns=["task", "factor", "level", "n"])


def missingness(df: pd.DataFrame, schema: T.Schema) -> pd.DataFrame:
    """Fraction of replicates without each metric."""
    frac = df[list(schema.metrics)].isna().mean() if schema.metrics else pd.Series(dtype=float)
    return frac.rename("missing").rename_axis("metric").reset_index()


def _levels(s: pd.Series) -> tuple[str, ...]:
    if _is_numeric(s):
        return tuple(level_key(v) for v in sorted(s.unique()))
    return tuple(sorted(s.map(level_key).unique()))


def main_directions(sub, task, schema, min_n) -> list[T.Direction]:
    out = []
    for f, kind in schema.factors.items():
        counts = sub[f].map(level_key).value_counts()
        if len(counts) < 2 or counts.min() < min_n:
            continue
        design = {T.BINARY: T.TWO_LEVEL, T.CATEGORICAL: T.K_LEVEL}.get(kind, T.CONTINUOUS)
        if kind == T.ORDINAL:
            design = T.K_LEVEL
        levels = _levels(sub[f])
        for m in schema.metrics:
            if sub[m].notna().sum() == len(sub):
                out.append(T.Direction(design, f, m, str(task), levels=levels))
                if kind == T.ORDINAL:
                    out.append(T.Direction(T.CONTINUOUS, f, m, str(task), levels=levels))
    return out


def _crossed(df: pd.DataFrame, a: str, b: str, min_n: int) -> bool:
    cells = df.groupby([df[a].map(level_key), df[b].map(level_key)]).size()
    la, lb = df[a].map(level_key).nunique(), df[b].map(level_key).nunique()
    return la >= 2 and lb >= 2 and len(cells) == la * lb and cells.min() >= min_n


def directions(df: pd.DataFrame, schema: T.Schema, min_n: int = 2) -> list[T.Direction]:
    """Testable directions: every factor -> metric within each task (>= ``min_n`` replicates per
    level), every crossed factor x factor pair, and, when the tasks cross a factor, factor x task
    plus the factor's effect aggregated across tasks.

    Crossing is checked on the runs that record the metric: a metric only some runs write (the
    rank of a low-rank network) must not get a direction from factors that vary only across the
    runs without it."""
    out: list[T.Direction] = []
    tasks = sorted(df.groupby(schema.task), key=lambda t: str(t[0])) if schema.task else [("", df)]
    for task, sub in tasks:
        out += main_directions(sub, task, schema, min_n)
        # metrics recorded by the same runs share one crossing check (a FlowRL sweep has ~100)
        masks = {m: sub[m].notna().to_numpy() for m in schema.metrics}
        for a, b in itertools.combinations(schema.factors, 2):
            crossed: dict[bytes, bool] = {}
            for m in schema.metrics:
                key = np.packbits(masks[m]).tobytes()
                if key not in crossed:
                    crossed[key] = _crossed(sub[masks[m]], a, b, min_n)
                if crossed[key]:
                    out.append(T.Direction(T.INTERACTION, a, m, str(task), b))
    if schema.task:
        for f, m in itertools.product(schema.factors, schema.metrics):
            has = df[df[m].notna()]
            sub = has[has.groupby(schema.task)[f].transform("nunique") > 1]
            if sub[schema.task].nunique() >= 2 and _crossed(sub, f, schema.task, min_n):
                out.append(T.Direction(T.INTERACTION, f, m, "", schema.task))
                out.append(T.Direction(T.AGGREGATE, f, m, "", schema.task, _levels(sub[f])))
    return out
