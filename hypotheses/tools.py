"""Module 2, the statistical tool registry (SAFETY_AND_ANALYSIS.md §2.2 table).

Each tool is a ``Tool(designs, library, fn)``; ``fn(data: TestData) -> list[Relation]`` runs one
test family on one direction, on maintained libraries (scipy.stats, statsmodels). Bootstrap CIs are
percentile intervals over ``TestData.reps`` resamples from a generator seeded by the relation key,
so results do not depend on the order tests run in. ``bh`` is the one Benjamini-Hochberg
correction applied over every test of a sweep.

References: Welch (1947); Mann & Whitney (1947); Cliff (1993) delta; Kruskal & Wallis (1952);
Tukey HSD; Schuirmann (1987) TOST; Agarwal et al. (2021, rliable) IQM with stratified bootstrap.
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy
import statsmodels
import statsmodels.api as sm
from scipy import stats
from statsmodels.stats.libqsturng import psturng, qsturng
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind

from harness.registry import Registry
from hypotheses import types as T

SCIPY = f"scipy {scipy.__version__}"
STATSMODELS = f"statsmodels {statsmodels.__version__}"


@dataclasses.dataclass(frozen=True)
class TestData:
    """One direction's data: ``frame`` holds the factor(s), the metric and ``run_id`` columns."""

    direction: T.Direction
    frame: pd.DataFrame
    reps: int = 1000
    eq_d: float = 0.5  # TOST equivalence bound in pooled standard deviations
    permutations: int = 2000

    @functools.cached_property
    def pairs(self):
        """Level pairs, computed once per direction and shared by the pairwise tools."""
        return _pairs(self)


@dataclasses.dataclass(frozen=True)
class Tool:
    designs: tuple[str, ...]
    library: str
    fn: Callable[[TestData], list[T.Relation]]


TOOLS: Registry[Tool] = Registry("tool")


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(key.encode()))


def percentile_ci(samples: np.ndarray) -> tuple[float | None, float | None]:
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return None, None
    lo, hi = np.percentile(s, [2.5, 97.5])
    return float(lo), float(hi)


def boot_two(a, b, stat, reps: int, key: str) -> tuple[float | None, float | None]:
    """Percentile CI of ``stat(b_resample, a_resample)``; groups resampled separately (the
    stratified bootstrap of rliable with levels as strata). ``stat`` is vectorised on axis -1."""
    if reps <= 0:
        return None, None
    rng = _rng(key)
    ia = rng.integers(0, len(a), (reps, len(a)))
    ib = rng.integers(0, len(b), (reps, len(b)))
    return percentile_ci(stat(np.asarray(b)[ib], np.asarray(a)[ia]))


def mean_diff(b, a):
    return np.mean(b, axis=-1) - np.mean(a, axis=-1)


def iqm(x, axis=-1):
    """Interquartile mean: the 25%-trimmed mean (rliable's IQM; same cut as
    ``scipy.stats.trim_mean(x, 0.25)``, sorted once for speed)."""
    x = np.moveaxis(np.asarray(x, float), axis, -1)
    cut = int(0.25 * x.shape[-1])
    return np.sort(x, axis=-1)[..., cut : x.shape[-1] - cut].mean(axis=-1)


def iqm_diff(b, a, axis=-1):
    return iqm(b, axis) - iqm(a, axis)


def cohen_d(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    pooled = np.sqrt(
        ((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2)
    )
    return float((b.mean() - a.mean()) / pooled) if pooled > 0 else float("nan")


def cliffs_delta(b, a) -> np.ndarray:
    """P(B > A) - P(B < A), vectorised over leading axes."""
    diff = np.asarray(b)[..., :, None] - np.asarray(a)[..., None, :]
    return np.sign(diff).mean(axis=(-2, -1))


def pairs(data: TestData) -> list[tuple[str, str, np.ndarray, np.ndarray, tuple[str, ...]]]:
    """(level_a, level_b, values_a, values_b, run_ids) for every pair of levels, a < b."""
    return data.pairs


def _pairs(data: TestData) -> list[tuple[str, str, np.ndarray, np.ndarray, tuple[str, ...]]]:
    d, f = data.direction, data.frame
    groups = {}
    for lv, g in f.groupby("_level"):
        groups[lv] = (g[d.metric].to_numpy(float), tuple(sorted(g["run_id"])))
    out = []
    for i, la in enumerate(d.levels):
        for lb in d.levels[i + 1 :]:
            (a, ia), (b, ib) = groups[la], groups[lb]
            out.append((la, lb, a, b, ia + ib))
    return out


def relation(data: TestData, tool: str, **kw) -> T.Relation:
    d = data.direction
    lib = TOOLS.get(tool).library if tool in TOOLS else SCIPY
    return T.Relation(tool=tool, tool_version=lib, design=d.design, factor=d.factor,
                      metric=d.metric, task=d.task, factor_b=d.factor_b, **kw)  # fmt: skip


def bh(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values (statsmodels ``fdr_bh``); NaN p stay NaN."""
    p = np.asarray(p, float)
    q = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        q[ok] = multipletests(p[ok], method="fdr_bh")[1]
    return q


def ols_fit(y: np.ndarray, x: np.ndarray):
    return sm.OLS(y, sm.add_constant(x, has_constant="add")).fit()


def _pair_designs() -> tuple[str, ...]:
    return (T.TWO_LEVEL, T.K_LEVEL)


def welch_t(data: TestData) -> list[T.Relation]:
    """Welch's unequal-variance t-test; effect = mean(b) - mean(a), Cohen's d, bootstrap CI."""
    out = []
    for la, lb, a, b, ids in pairs(data):
        p = stats.ttest_ind(b, a, equal_var=False).pvalue
        key = f"welch_t|{data.direction}|{la}|{lb}"
        lo, hi = boot_two(a, b, mean_diff, data.reps, key)
        out.append(relation(data, "welch_t", effect=float(b.mean() - a.mean()),
                            effect_label="mean difference", std_effect=cohen_d(a, b), ci_low=lo,
                            ci_high=hi, p=float(p), n=len(a) + len(b), run_ids=ids,
                            level_a=la, level_b=lb))  # fmt: skip
    return out


def mann_whitney(data: TestData) -> list[T.Relation]:
    """Mann-Whitney U (exact for small samples); effect = Cliff's delta with bootstrap CI."""
    out = []
    for la, lb, a, b, ids in pairs(data):
        p = stats.mannwhitneyu(b, a, alternative="two-sided").pvalue
        key = f"mann_whitney|{data.direction}|{la}|{lb}"
        lo, hi = boot_two(a, b, cliffs_delta, data.reps, key)
        delta = float(cliffs_delta(b, a))
        out.append(relation(data, "mann_whitney", effect=delta, effect_label="Cliff's delta",
                            std_effect=delta, ci_low=lo, ci_high=hi, p=float(p),
                            n=len(a) + len(b), run_ids=ids, level_a=la, level_b=lb))  # fmt: skip
    return out


def iqm_compare(data: TestData) -> list[T.Relation]:
    """IQM(b) - IQM(a) with a stratified (per-level) bootstrap CI and a permutation p-value."""
    out = []
    for la, lb, a, b, ids in pairs(data):
        key = f"iqm|{data.direction}|{la}|{lb}"
        res = stats.permutation_test((b, a), iqm_diff, vectorized=True, rng=_rng(key),
                                     n_resamples=data.permutations)  # fmt: skip
        lo, hi = boot_two(a, b, iqm_diff, data.reps, key)
        out.append(relation(data, "iqm", effect=float(iqm_diff(b, a)), effect_label="IQM difference",
                            std_effect=None, ci_low=lo, ci_high=hi, p=float(res.pvalue),
                            n=len(a) + len(b), run_ids=ids, level_a=la, level_b=lb))  # fmt: skip
    return out


def tost(data: TestData) -> list[T.Relation]:
    """Two one-sided Welch tests (TOST) against +-``eq_d`` pooled SDs: a small p supports
    'no detectable effect' (equivalence within the bound, stored in ``bound``)."""
    out = []
    for la, lb, a, b, ids in pairs(data):
        sd = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
        if not sd > 0:
            continue
        bound = float(data.eq_d * sd)
        p = ttost_ind(b, a, -bound, bound, usevar="unequal")[0]
        lo, hi = boot_two(a, b, mean_diff, data.reps, f"tost|{data.direction}|{la}|{lb}")
        out.append(relation(data, "tost", effect=float(b.mean() - a.mean()),
                            effect_label="mean difference", std_effect=cohen_d(a, b), ci_low=lo,
                            ci_high=hi, p=float(p), n=len(a) + len(b), run_ids=ids,
                            level_a=la, level_b=lb, bound=bound))  # fmt: skip
    return out


def _groups(data: TestData) -> list[np.ndarray]:
    f, d = data.frame, data.direction
    return [f.loc[f["_level"] == lv, d.metric].to_numpy(float) for lv in d.levels]


def _eta_sq(groups: list[np.ndarray]) -> float:
    allv = np.concatenate(groups)
    ss_b = sum(len(g) * (g.mean() - allv.mean()) ** 2 for g in groups)
    ss_t = ((allv - allv.mean()) ** 2).sum()
    return float(ss_b / ss_t) if ss_t > 0 else float("nan")


def anova_tukey(data: TestData) -> list[T.Relation]:
    """One-way ANOVA (omnibus, effect eta^2) plus Tukey-Kramer HSD post-hoc pairs: q =
    |diff| / sqrt(MSE / 2 (1/n_a + 1/n_b)) against the studentized range with k levels and
    N - k df (statsmodels ``libqsturng``, tabulated, fast for many sweeps), CI = diff +- q95 se."""
    groups = _groups(data)
    ids = tuple(sorted(data.frame["run_id"]))
    n, k = int(sum(len(g) for g in groups)), len(groups)
    omni = relation(data, "anova", effect=_eta_sq(groups), effect_label="eta^2",
                    std_effect=_eta_sq(groups), ci_low=None, ci_high=None,
                    p=float(stats.f_oneway(*groups).pvalue), n=n, run_ids=ids)  # fmt: skip
    out = [omni]
    df_err = n - k
    mse = sum(((g - g.mean()) ** 2).sum() for g in groups) / df_err
    q95 = float(qsturng(0.95, k, df_err))
    for la, lb, a, b, pair_ids in pairs(data):
        diff = float(b.mean() - a.mean())
        se = float(np.sqrt(mse / 2 * (1 / len(a) + 1 / len(b))))
        if not se > 0:
            continue
        p = float(np.clip(np.ravel(psturng(abs(diff) / se, k, df_err))[0], 0.0, 1.0))
        out.append(relation(data, "tukey_hsd", effect=diff, effect_label="mean difference",
                            std_effect=cohen_d(a, b), ci_low=diff - q95 * se,
                            ci_high=diff + q95 * se, p=p, n=len(a) + len(b), run_ids=pair_ids,
                            level_a=la, level_b=lb))  # fmt: skip
    return out


def kruskal(data: TestData) -> list[T.Relation]:
    """Kruskal-Wallis H (omnibus); effect = epsilon^2 = H / (n - 1)."""
    groups = _groups(data)
    res = stats.kruskal(*groups)
    n = int(sum(len(g) for g in groups))
    eps = float(res.statistic / (n - 1))
    return [relation(data, "kruskal", effect=eps, effect_label="epsilon^2", std_effect=eps,
                     ci_low=None, ci_high=None, p=float(res.pvalue), n=n,
                     run_ids=tuple(sorted(data.frame["run_id"])))]  # fmt: skip


def _xy(data: TestData) -> tuple[np.ndarray, np.ndarray]:
    f = data.frame
    return f[data.direction.factor].to_numpy(float), f[data.direction.metric].to_numpy(float)


def _boot_xy(x, y, stat, reps, key) -> tuple[float | None, float | None]:
    """Pairs-bootstrap percentile CI of ``stat``, vectorised over the resamples (axis 0)."""
    if reps <= 0:
        return None, None
    idx = _rng(key).integers(0, len(x), (reps, len(x)))
    return percentile_ci(stat(x[idx], y[idx]))


def _slope(x, y) -> np.ndarray:
    """OLS slope of ``y`` on ``x`` along the last axis; nan where ``x`` is constant."""
    xc, yc = x - x.mean(-1, keepdims=True), y - y.mean(-1, keepdims=True)
    sxx = (xc * xc).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sxx > 0, (xc * yc).sum(-1) / sxx, np.nan)


def _rho(x, y) -> np.ndarray:
    """Spearman's rho along the last axis (Pearson's r of average ranks, as
    ``scipy.stats.spearmanr``); nan where either is constant."""
    rx, ry = stats.rankdata(x, axis=-1), stats.rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    den = np.sqrt((rx * rx).sum(-1) * (ry * ry).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, (rx * ry).sum(-1) / den, np.nan)


def spearman(data: TestData) -> list[T.Relation]:
    """Spearman rank correlation of a numeric factor with the metric; bootstrap CI of rho."""
    x, y = _xy(data)
    res = stats.spearmanr(x, y)
    lo, hi = _boot_xy(x, y, _rho, data.reps, f"spearman|{data.direction}")
    return [relation(data, "spearman", effect=float(res.statistic), effect_label="Spearman rho",
                     std_effect=float(res.statistic), ci_low=lo, ci_high=hi, p=float(res.pvalue),
                     n=len(x), run_ids=tuple(sorted(data.frame["run_id"])))]  # fmt: skip


def ols_slope(data: TestData) -> list[T.Relation]:
    """OLS slope of the metric on a numeric factor (t-test p), with a pairs-bootstrap CI."""
    x, y = _xy(data)
    fit = ols_fit(y, x)
    lo, hi = _boot_xy(x, y, _slope, data.reps, f"ols_slope|{data.direction}")
    return [relation(data, "ols_slope", effect=float(fit.params[1]), effect_label="OLS slope",
                     std_effect=float(fit.params[1] * x.std() / y.std()), ci_low=lo, ci_high=hi,
                     p=float(fit.pvalues[1]), n=len(x), run_ids=tuple(sorted(data.frame["run_id"])))]  # fmt: skip


def _codes(s: pd.Series) -> pd.DataFrame:
    """Dummy columns (first level dropped) or the centred value for a many-valued numeric."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s) and s.nunique() > 5:
        return pd.DataFrame({s.name: s - s.mean()})
    keys = s.map(str)
    return pd.get_dummies(keys, prefix=s.name, prefix_sep="=", drop_first=True).astype(float)


def ols_interaction(data: TestData) -> list[T.Relation]:
    """OLS ``metric ~ A + B + A:B`` against ``metric ~ A + B`` (F-test of the interaction terms).

    The effect is the interaction coefficient (a difference of differences for two binary
    factors) with its OLS 95% CI; with several interaction terms, the largest in magnitude.
    No relation when a factor takes one value in ``frame`` (the rows that have the metric: a
    sweep's factors may vary only across runs that lack it, e.g. ranks of dense networks)."""
    d, f = data.direction, data.frame
    ca, cb = _codes(f[d.factor]), _codes(f[d.factor_b])
    if ca.shape[1] == 0 or cb.shape[1] == 0:
        return []
    inter = pd.DataFrame(
        {f"{i}:{j}": ca[i] * cb[j] for i in ca for j in cb}, index=f.index, dtype=float
    )
    y = f[d.metric].to_numpy(float)
    reduced = ols_fit(y, pd.concat([ca, cb], axis=1).to_numpy())
    full = ols_fit(y, pd.concat([ca, cb, inter], axis=1).to_numpy())
    if full.df_resid < 1:
        return []
    _, p, _ = full.compare_f_test(reduced)
    k = ca.shape[1] + cb.shape[1] + 1
    coefs = np.asarray(full.params[k:])
    top = int(np.argmax(np.abs(coefs)))
    lo, hi = np.asarray(full.conf_int())[k + top]
    eta = 1 - full.ssr / reduced.ssr if reduced.ssr > 0 else float("nan")
    return [relation(data, "ols_interaction", effect=float(coefs[top]),
                     effect_label=f"interaction coef {inter.columns[top]}", std_effect=float(eta),
                     ci_low=float(lo), ci_high=float(hi), p=float(p), n=len(y),
                     run_ids=tuple(sorted(f["run_id"])))]  # fmt: skip


def task_normalise(values: np.ndarray, task: np.ndarray) -> np.ndarray:
    """Per-task min-max normalisation, so tasks with different score ranges can be pooled
    (rliable normalises by task reference scores; we have none, so the observed range)."""
    out = np.empty_like(values)
    for t in np.unique(task):
        v = values[task == t]
        span = np.ptp(v)
        out[task == t] = (v - v.min()) / span if span > 0 else 0.0
    return out


def _strata_perm(rng, task: np.ndarray, labels: np.ndarray, reps: int) -> np.ndarray:
    """``reps`` permutations of ``labels`` within each task stratum: int[reps, N]."""
    idx = np.tile(np.arange(len(labels)), (reps, 1))
    for t in np.unique(task):
        pos = np.flatnonzero(task == t)
        idx[:, pos] = pos[rng.permuted(np.tile(np.arange(len(pos)), (reps, 1)), axis=1)]
    return idx


def _strata_boot(rng, cells: np.ndarray, reps: int) -> np.ndarray:
    """``reps`` bootstrap index draws, with replacement within each cell: int[reps, N]."""
    idx = np.empty((reps, len(cells)), dtype=int)
    for c in np.unique(cells):
        pos = np.flatnonzero(cells == c)
        idx[:, pos] = pos[rng.integers(0, len(pos), (reps, len(pos)))]
    return idx


def _masked_iqm(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """IQM of ``values[r][mask[r]]`` per row; every row selects the same count. [R]"""
    values = np.broadcast_to(values, mask.shape)
    return iqm(values[mask].reshape(mask.shape[0], -1))


def iqm_aggregate(data: TestData) -> list[T.Relation]:
    """A factor's effect across tasks (Agarwal et al. 2021): IQM over all (task, seed) runs of
    per-task normalised scores, IQM(b) - IQM(a) with a stratified bootstrap CI (seeds resampled
    within each task x level cell) and a permutation p (labels shuffled within tasks)."""
    d, f = data.direction, data.frame
    task = f[d.factor_b].map(str).to_numpy()
    score = task_normalise(f[d.metric].to_numpy(float), task)
    level = f["_level"].to_numpy()
    out = []
    for la, lb, _, _, ids in pairs(data):
        keep = np.isin(level, (la, lb))
        s, t, is_b = score[keep], task[keep], level[keep] == lb
        rng = _rng(f"iqm_aggregate|{d}|{la}|{lb}")
        effect = float(iqm(s[is_b]) - iqm(s[~is_b]))
        perm = is_b[_strata_perm(rng, t, is_b, data.permutations)]
        null = _masked_iqm(s, perm) - _masked_iqm(s, ~perm)
        p = (1 + np.sum(np.abs(null) >= abs(effect) - 1e-12)) / (1 + len(null))
        lo, hi = None, None
        if data.reps:  # stratified bootstrap: seeds resampled within each task x level cell
            draw = _strata_boot(rng, t + "|" + is_b.astype(str), data.reps)
            diff = _masked_iqm(s[draw], is_b[draw]) - _masked_iqm(s[draw], ~is_b[draw])
            lo, hi = percentile_ci(diff)
        out.append(relation(data, "iqm_aggregate", effect=effect,
                            effect_label="IQM difference (task-normalised)", std_effect=None,
                            ci_low=lo, ci_high=hi, p=float(p), n=int(keep.sum()), run_ids=ids,
                            level_a=la, level_b=lb))  # fmt: skip
    return out


for _name, _designs, _lib, _fn in (
    ("welch_t", _pair_designs(), SCIPY, welch_t),
    ("mann_whitney", _pair_designs(), SCIPY, mann_whitney),
    ("iqm", _pair_designs(), SCIPY, iqm_compare),
    ("tost", _pair_designs(), STATSMODELS, tost),
    ("anova", (T.K_LEVEL,), STATSMODELS, anova_tukey),
    ("kruskal", (T.K_LEVEL,), SCIPY, kruskal),
    ("spearman", (T.CONTINUOUS,), SCIPY, spearman),
    ("ols_slope", (T.CONTINUOUS,), STATSMODELS, ols_slope),
    ("ols_interaction", (T.INTERACTION,), STATSMODELS, ols_interaction),
    ("iqm_aggregate", (T.AGGREGATE,), SCIPY, iqm_aggregate),
):
    TOOLS.add(_name, Tool(_designs, _lib, _fn))
TOOLS.add(
    "tukey_hsd", Tool((), STATSMODELS, anova_tukey)
)  # produced by "anova"; listed for versions
