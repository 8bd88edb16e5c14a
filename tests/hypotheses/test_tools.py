"""Golden values of the registered tools against direct scipy calls and hand arithmetic."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hypotheses import tools
from hypotheses import types as T


def _data(groups: dict[str, list[float]], design=T.K_LEVEL) -> tools.TestData:
    rows = [{"run_id": f"{lv}#{i}", "f": lv, "_level": lv, "y": v}
            for lv, vals in groups.items() for i, v in enumerate(vals)]  # fmt: skip
    d = T.Direction(design, "f", "y", "", levels=tuple(sorted(groups)))
    return tools.TestData(d, pd.DataFrame(rows), reps=200, permutations=200)


GROUPS = {
    "a": [1.0, 2.0, 3.0, 4.0, 2.5],
    "b": [3.0, 4.5, 5.0, 6.0, 4.0],
    "c": [2.0, 2.2, 3.1, 2.9, 3.3],
}


def test_tukey_matches_scipy():
    rels = {
        (r.level_a, r.level_b): r for r in tools.anova_tukey(_data(GROUPS)) if r.tool == "tukey_hsd"
    }
    ref = stats.tukey_hsd(*(np.array(GROUPS[k]) for k in "abc"))
    ci = ref.confidence_interval(0.95)
    for (i, la), (j, lb) in [((0, "a"), (1, "b")), ((0, "a"), (2, "c")), ((1, "b"), (2, "c"))]:
        r = rels[(la, lb)]
        # scipy's statistic[i, j] is mean_i - mean_j; ours is b - a = mean_j - mean_i
        assert r.effect == pytest.approx(-ref.statistic[i, j])
        assert r.ci_low == pytest.approx(-ci.high[i, j], abs=2e-3)
        assert r.ci_high == pytest.approx(-ci.low[i, j], abs=2e-3)
        assert r.p == pytest.approx(min(ref.pvalue[i, j], 0.9), abs=5e-3)  # table tops out at 0.9


def test_anova_kruskal_welch_mwu_match_scipy():
    data = _data(GROUPS)
    anova = [r for r in tools.anova_tukey(data) if r.tool == "anova"][0]
    assert anova.p == pytest.approx(stats.f_oneway(*GROUPS.values()).pvalue)
    assert tools.kruskal(data)[0].p == pytest.approx(stats.kruskal(*GROUPS.values()).pvalue)
    welch = {(r.level_a, r.level_b): r for r in tools.welch_t(data)}[("a", "b")]
    assert welch.p == pytest.approx(
        stats.ttest_ind(GROUPS["b"], GROUPS["a"], equal_var=False).pvalue
    )
    assert welch.effect == pytest.approx(np.mean(GROUPS["b"]) - np.mean(GROUPS["a"]))
    mwu = {(r.level_a, r.level_b): r for r in tools.mann_whitney(data)}[("a", "b")]
    assert mwu.p == pytest.approx(stats.mannwhitneyu(GROUPS["b"], GROUPS["a"]).pvalue)


def test_effect_sizes_by_hand():
    # b > a in 3 of 4 pairs, b < a in 1: delta = (3 - 1) / 4
    assert tools.cliffs_delta(np.array([2.0, 4.0]), np.array([1.0, 3.0])) == pytest.approx(0.5)
    # IQM of 1..8 drops two from each end: mean(3, 4, 5, 6)
    assert tools.iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)
    # Cohen's d: means 2 and 4, both sd 1 -> d = 2
    assert tools.cohen_d([1.0, 2.0, 3.0], [3.0, 4.0, 5.0]) == pytest.approx(2.0)


def test_bh_by_hand():
    # p sorted (0.01, 0.02, 0.03, 0.5), m = 4: q_i = min_{j>=i} p_j m / j
    q = tools.bh(np.array([0.03, 0.01, 0.5, 0.02, np.nan]))
    np.testing.assert_allclose(q[:4], [0.04, 0.04, 0.5, 0.04])
    assert np.isnan(q[4])


def test_registry_covers_designs():
    for design in (T.TWO_LEVEL, T.K_LEVEL, T.CONTINUOUS, T.INTERACTION):
        assert any(design in tools.TOOLS.get(n).designs for n in tools.TOOLS.names())


def test_continuous_tools():
    rng = np.random.default_rng(0)
    x = np.repeat(np.arange(6.0), 4)
    y = 2.0 * x + rng.normal(size=x.size)
    frame = pd.DataFrame({"run_id": [f"r{i}" for i in range(x.size)], "lr": x, "y": y})
    data = tools.TestData(T.Direction(T.CONTINUOUS, "lr", "y", ""), frame, reps=300)
    slope = tools.ols_slope(data)[0]
    assert slope.effect == pytest.approx(np.polyfit(x, y, 1)[0])
    assert slope.ci_low < 2.0 < slope.ci_high and slope.p < 1e-6
    rho = tools.spearman(data)[0]
    assert rho.p == pytest.approx(stats.spearmanr(x, y).pvalue) and rho.effect > 0.8


def test_bootstrap_statistics_match_scipy_per_resample():
    """The vectorised bootstrap statistics equal ``np.polyfit`` / ``scipy.stats.spearmanr`` on
    each resample (ties included: few factor levels, so many resamples have repeated x), and a
    resample with a constant factor is nan (dropped from the CI)."""
    rng = np.random.default_rng(3)
    x = np.repeat([1e-4, 3e-4, 1e-3], 3)
    y = rng.normal(size=x.size).round(1)  # ties in y too
    idx = rng.integers(0, x.size, (200, x.size))
    idx[0] = 0  # one resample of a single level
    xs, ys = x[idx], y[idx]
    slope, rho = tools._slope(xs, ys), tools._rho(xs, ys)
    for i in range(len(idx)):
        if np.ptp(xs[i]) == 0:
            assert np.isnan(slope[i]) and np.isnan(rho[i])
            continue
        assert slope[i] == pytest.approx(np.polyfit(xs[i], ys[i], 1)[0], rel=1e-9, abs=1e-9)
        want = stats.spearmanr(xs[i], ys[i]).statistic if np.ptp(ys[i]) > 0 else np.nan
        np.testing.assert_allclose(rho[i], want, rtol=1e-12, atol=1e-12)
    assert np.isnan(slope).sum() >= 1 and np.isfinite(slope).sum() >= 150


def test_ols_interaction_is_the_difference_of_differences_and_needs_two_varying_factors():
    rng = np.random.default_rng(0)
    cells = {("a", "x"): 0.0, ("a", "y"): 1.0, ("b", "x"): 2.0, ("b", "y"): 6.0}  # dd = 3
    rows = [{"run_id": f"{fa}{fb}{i}", "A": fa, "B": fb, "y": mu + 0.1 * rng.normal()}
            for (fa, fb), mu in cells.items() for i in range(4)]  # fmt: skip
    frame = pd.DataFrame(rows)
    d = T.Direction(T.INTERACTION, "A", "y", "", "B")
    r = tools.ols_interaction(tools.TestData(d, frame))[0]
    mean = frame.groupby(["A", "B"])["y"].mean()
    dd = (mean["b", "y"] - mean["b", "x"]) - (mean["a", "y"] - mean["a", "x"])
    assert r.effect == pytest.approx(dd) and r.ci_low < 3.0 < r.ci_high and r.p < 1e-6
    # The rows that have a metric may hold one level of a factor that varies across the sweep
    # (ranks exist only for low-rank networks): no interaction to estimate, no crash.
    one_level = frame[frame["A"] == "a"]
    assert tools.ols_interaction(tools.TestData(d, one_level)) == []


def test_iqm_aggregate_across_tasks():
    """b beats a by 1 SD on two tasks whose scores differ 100x in scale: the task-normalised IQM
    difference is positive with a CI above 0; shuffling within tasks gives its p."""
    rng = np.random.default_rng(0)
    rows = [{"run_id": f"{t}{lv}#{s}", "f": lv, "_level": lv, "task": t,
             "y": scale * (d + rng.normal())}
            for t, scale in (("t1", 1.0), ("t2", 100.0)) for lv, d in (("a", 0.0), ("b", 1.0))
            for s in range(6)]  # fmt: skip
    frame = pd.DataFrame(rows)
    d = T.Direction(T.AGGREGATE, "f", "y", "", "task", ("a", "b"))
    r = tools.iqm_aggregate(tools.TestData(d, frame, reps=500, permutations=500))[0]
    norm = tools.task_normalise(frame["y"].to_numpy(), frame["task"].to_numpy())
    is_b = frame["f"].to_numpy() == "b"
    assert r.effect == pytest.approx(tools.iqm(norm[is_b]) - tools.iqm(norm[~is_b]))
    assert 0 < r.ci_low < r.effect < r.ci_high and r.p < 0.01
    # normalisation: each task spans [0, 1]
    for t in ("t1", "t2"):
        v = norm[frame["task"].to_numpy() == t]
        assert v.min() == 0.0 and v.max() == 1.0
