"""Feature B2, replication on held-out evidence (SAFETY_AND_ANALYSIS.md §2.3; the analogue of
PROTEUS's external validation on CPTAC cohorts of the same cancer type).

The evidence is split into a discovery part (e.g. the first seeds of every cell, or one task) and a
validation part (the held-out seeds, or a sister task of the same family). A relation discovered
at q < alpha on the discovery part is *replicated* when a one-sided test in the discovered
direction passes on the validation part (alpha_rep, uncorrected: each is one planned test).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.weightstats import ttost_ind

from hypotheses import analyze, explore, tools
from hypotheses import types as T

REPLICATED, FAILED, UNTESTABLE, NOT_DISCOVERED = (
    "replicated",
    "failed",
    "untestable",
    "not discovered in split",
)


@dataclasses.dataclass(frozen=True)
class Validation:
    """Outcome of one planned one-sided test on the validation part."""

    key: str
    status: str
    p: float | None
    effect: float | None
    n: int
    task: str
    run_ids: tuple[str, ...]


def _cell_columns(schema: T.Schema) -> list[str]:
    return list(schema.factors) + ([schema.task] if schema.task else [])


def split_seeds(df: pd.DataFrame, schema: T.Schema, holdout: float = 0.4):
    """(discovery, validation): in every cell (factors x task) the last ``ceil(holdout * n)``
    seeds, in seed order, are held out."""
    keys = df[_cell_columns(schema)].map(explore.level_key).agg("|".join, axis=1)
    order = df.assign(_cell=keys).sort_values(["_cell", "seed", "run_id"])
    rank = order.groupby("_cell").cumcount()
    size = order.groupby("_cell")["run_id"].transform("size")
    held = rank >= size - np.ceil(holdout * size).astype(int)
    val = order.index[held.to_numpy()]
    return df.drop(index=val), df.loc[sorted(val)]


def split_task(df: pd.DataFrame, schema: T.Schema, discovery: str, validation: str):
    """(discovery, validation) = the rows of two sister tasks."""
    task = df[schema.task].map(str)
    return df[task == discovery], df[task == validation]


def _one_sided(r: T.Relation, frame: pd.DataFrame, alternative: str) -> tuple[float, float, int]:
    """(p, effect, n) of the one-sided analogue of ``r``'s tool on ``frame``."""
    m = frame[r.metric].to_numpy(float)
    if r.design in (T.INTERACTION, T.AGGREGATE) or r.tool in analyze.OMNIBUS:
        levels = (r.level_a, r.level_b) if r.design == T.AGGREGATE else _levels(frame)
        if len(levels) < 2 or not set(levels) <= set(_levels(frame)):
            return math.nan, math.nan, len(m)  # the validation rows lack a level: untestable
        d = T.Direction(r.design, r.factor, r.metric, r.task, r.factor_b, levels)
        res = tools.TOOLS.get(r.tool).fn(tools.TestData(d, frame, reps=0))
        return (res[0].p, res[0].effect, res[0].n) if res else (math.nan, math.nan, len(m))
    if r.design == T.CONTINUOUS:
        x = frame[r.factor].to_numpy(float)
        res = stats.spearmanr(x, m, alternative=alternative)
        return float(res.pvalue), float(res.statistic), len(m)
    a, b = (m[frame["_level"].to_numpy() == lv] for lv in (r.level_a, r.level_b))
    if min(len(a), len(b)) < 2:
        return math.nan, math.nan, len(a) + len(b)
    if r.tool == "mann_whitney":
        p = stats.mannwhitneyu(b, a, alternative=alternative).pvalue
    else:
        p = stats.ttest_ind(b, a, equal_var=False, alternative=alternative).pvalue
    return float(p), float(b.mean() - a.mean()), len(a) + len(b)


def _levels(frame: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sorted(frame["_level"].unique()))


def validate(r: T.Relation, val: pd.DataFrame, schema: T.Schema, task: str, alpha: float = 0.05):
    """One planned one-sided test of relation ``r`` on the validation rows (within ``task``)."""
    d = T.Direction(r.design, r.factor, r.metric, task, r.factor_b)
    frame = analyze.direction_frame(val, schema, d)
    ids = tuple(sorted(frame["run_id"]))
    if r.relation == T.NO_EFFECT:
        a, b = (
            frame.loc[frame["_level"] == lv, r.metric].to_numpy(float)
            for lv in (r.level_a, r.level_b)
        )
        if min(len(a), len(b)) < 2:
            return Validation(r.key, UNTESTABLE, None, None, len(frame), task, ids)
        p = float(ttost_ind(b, a, -r.bound, r.bound, usevar="unequal")[0])
        status = REPLICATED if p < alpha else FAILED
        return Validation(r.key, status, p, float(b.mean() - a.mean()), len(frame), task, ids)
    alternative = "less" if r.relation == T.DECREASES else "greater"
    p, effect, n = _one_sided(r, frame, alternative)
    if not np.isfinite(p):
        return Validation(r.key, UNTESTABLE, None, None, n, task, ids)
    same_sign = r.relation in (T.MODULATES, T.INTERACTS) or np.sign(effect) == np.sign(r.effect)
    status = REPLICATED if p < alpha and same_sign else FAILED
    return Validation(r.key, status, p, effect, n, task, ids)


@dataclasses.dataclass(frozen=True)
class Replication:
    """Discovery relations (q over the discovery family) and their validations, by key."""

    split: str
    discovery: tuple[T.Relation, ...]
    validations: dict[str, Validation]
    disc_ids: frozenset[str]
    val_ids: frozenset[str]

    @functools.cached_property
    def discovered(self) -> frozenset[str]:
        """Keys of every discovery test (a set: ``status_of`` runs once per hypothesis)."""
        return frozenset(d.key for d in self.discovery)


def replicate(df, schema, cfg: analyze.AnalysisConfig, split: str, holdout: float = 0.4,
              tasks: tuple[str, str] | None = None) -> Replication:  # fmt: skip
    """Discovery analysis on one part, one planned validation test per supported relation.

    ``split`` is "seeds" (held-out seeds per cell) or "task" (``tasks = (discovery, validation)``,
    each relation's task mapped to the validation task)."""
    if split == "task":
        disc, val = split_task(df, schema, *tasks)
    else:
        disc, val = split_seeds(df, schema, holdout)
    found = analyze.analyze(disc, schema, cfg)
    checks = {}
    for r in found:
        if r.relation == T.NONE:
            continue
        task = tasks[1] if split == "task" and r.task else r.task
        checks[r.key] = validate(r, val, schema, task, cfg.alpha)
    return Replication(
        split, tuple(found), checks, frozenset(disc["run_id"]), frozenset(val["run_id"])
    )


def status_of(r: T.Relation, rep: Replication) -> str:
    """Replication status of a full-data relation, matched by key (task mapped for task splits)."""
    if r.key in rep.validations:
        return rep.validations[r.key].status
    return NOT_DISCOVERED if r.key in rep.discovered else "n/a"


def rates(rep: Replication) -> pd.DataFrame:
    """Replication rate per tool and per relation type (testable validations only)."""
    rel = {r.key: r for r in rep.discovery}
    rows = [
        {"tool": rel[k].tool, "relation": rel[k].relation, "replicated": v.status == REPLICATED}
        for k, v in rep.validations.items()
        if v.status != UNTESTABLE
    ]
    frame = pd.DataFrame(rows, columns=["tool", "relation", "replicated"])
    out = []
    for by in ("tool", "relation"):
        for name, g in frame.groupby(by):
            out.append(
                {"by": by, "name": name, "tested": len(g), "rate": float(g["replicated"].mean())}
            )
    return pd.DataFrame(out, columns=["by", "name", "tested", "rate"])
