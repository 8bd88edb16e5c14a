"""Runs the registered tools over every direction of a sweep, then one BH correction and the
relation type of each test (SAFETY_AND_ANALYSIS.md §2.2 Modules 2-3)."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd

from hypotheses import explore, tools
from hypotheses import types as T

DIRECTIONAL = (
    "welch_t",
    "mann_whitney",
    "iqm",
    "iqm_aggregate",
    "tukey_hsd",
    "spearman",
    "ols_slope",
)
OMNIBUS = ("anova", "kruskal")


@dataclasses.dataclass(frozen=True)
class AnalysisConfig:
    alpha: float = 0.05
    reps: int = 1000  # bootstrap resamples (0: no bootstrap CIs)
    permutations: int = 2000
    eq_d: float = 0.5
    min_n: int = 2
    tools: tuple[str, ...] = ()  # empty: every registered tool


def direction_frame(df: pd.DataFrame, schema: T.Schema, d: T.Direction) -> pd.DataFrame:
    sub = df if not d.task or not schema.task else df[df[schema.task].map(str) == d.task]
    cols = ["run_id", d.factor, d.metric] + ([d.factor_b] if d.factor_b else [])
    frame = sub[list(dict.fromkeys(cols))].dropna().copy()
    frame["_level"] = frame[d.factor].map(explore.level_key)
    if d.factor_b:  # keep the fully crossed part (a task that ran one level drops out)
        per_b = frame.groupby(frame[d.factor_b].map(explore.level_key))["_level"]
        full = per_b.transform("nunique") == frame["_level"].nunique()
        frame = frame[full]
    return frame


def run_tools(df: pd.DataFrame, schema: T.Schema, dirs, cfg: AnalysisConfig) -> list[T.Relation]:
    """Every applicable tool on every direction, in a deterministic order; q not yet set."""
    names = cfg.tools or tools.TOOLS.names()
    out: list[T.Relation] = []
    # near-constant groups (a collapsed policy) make scipy warn; the p-values stay valid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for d in dirs:
            out += _run_direction(df, schema, d, names, cfg)
    return out


def _run_direction(df, schema, d, names, cfg: AnalysisConfig) -> list[T.Relation]:
    out: list[T.Relation] = []
    frame = direction_frame(df, schema, d)
    data = tools.TestData(d, frame, cfg.reps, cfg.eq_d, cfg.permutations)
    for name in names:
        if d.design in tools.TOOLS.get(name).designs:
            out += [r for r in tools.TOOLS.get(name).fn(data) if np.isfinite(r.p)]
    return out


def classify(r: T.Relation, alpha: float) -> str:
    """Edge type of a corrected test: directional tools give increases/decreases, omnibus tests
    ``modulates``, interactions ``interacts_with``, TOST ``no_detectable_effect``."""
    if r.q is None or not r.q < alpha:
        return T.NONE
    if r.tool == "tost":
        return T.NO_EFFECT
    if r.tool in OMNIBUS:
        return T.MODULATES
    if r.design == T.INTERACTION:
        return T.INTERACTS
    return T.INCREASES if r.effect > 0 else T.DECREASES


def correct(relations: list[T.Relation], alpha: float) -> list[T.Relation]:
    """One Benjamini-Hochberg correction over every test, then the relation types."""
    q = tools.bh(np.array([r.p for r in relations]))
    out = []
    for r, qi in zip(relations, q, strict=True):
        r = dataclasses.replace(r, q=float(qi))
        out.append(dataclasses.replace(r, relation=classify(r, alpha)))
    return out


def analyze(df: pd.DataFrame, schema: T.Schema, cfg: AnalysisConfig) -> list[T.Relation]:
    """Directions -> tools -> BH -> typed relations for one sweep table."""
    dirs = explore.directions(df, schema, cfg.min_n)
    return correct(run_tools(df, schema, dirs, cfg), cfg.alpha)
