"""Replication (§2.3) and scoring / ranking / proposal (§2.4) with planted truth."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hypotheses import analyze, explore, graph, pipeline, score
from hypotheses import replicate as R
from hypotheses import types as T
from tests.hypotheses import planted


def _two_groups(rng, n, d):
    rows = [{"A": f"a{a}", "seed": str(s), "run_id": f"a{a}#{s}", "run_dir": f"/r/a{a}",
             "y": d * a + rng.normal()} for a in (0, 1) for s in range(n)]  # fmt: skip
    return pd.DataFrame(rows)


def _welch_relation(df, schema):
    cfg = analyze.AnalysisConfig(reps=0, tools=("welch_t",))
    return [r for r in analyze.analyze(df, schema, cfg) if r.tool == "welch_t"][0]


def test_planted_effects_replicate():
    """d = 1 with 60 seeds per arm: discovered on 30 and replicated (one-sided) on the held-out 30
    in >= 90% of simulated sweeps."""
    rng = np.random.default_rng(0)
    ok = 0
    for _ in range(60):
        df = _two_groups(rng, 60, 1.0)
        schema = explore.infer_schema(df, ("A",))
        disc, val = R.split_seeds(df, schema, holdout=0.5)
        assert not set(disc["run_id"]) & set(val["run_id"])
        assert len(val) == 60
        r = _welch_relation(disc, schema)
        ok += r.relation == T.INCREASES and R.validate(r, val, schema, "").status == R.REPLICATED
    assert ok / 60 >= 0.9


def test_null_discoveries_replicate_at_alpha():
    """Uncorrected null 'discoveries' (p < 0.05) replicate at about the nominal alpha. Discovery
    p-values for 2000 null sweeps are computed in one vectorised Welch test; each discovery is
    then validated through ``replicate.validate`` on its held-out half."""
    rng = np.random.default_rng(1)
    n = 10
    disc_y = rng.normal(size=(2000, 2, n))
    res = stats.ttest_ind(disc_y[:, 1], disc_y[:, 0], axis=-1, equal_var=False)
    hits = np.flatnonzero(res.pvalue < 0.05)
    assert len(hits) > 60
    schema = T.Schema({"A": T.BINARY}, ("y",), "seed", None, {}, ())
    reps = []
    for i in hits:
        val = _two_groups(rng, n, 0.0)
        sign = T.INCREASES if res.statistic[i] > 0 else T.DECREASES
        r = _rel(factor="A", metric="y", level_a="a0", level_b="a1", relation=sign,
                 effect=float(res.statistic[i]))  # fmt: skip
        reps.append(R.validate(r, val, schema, "").status == R.REPLICATED)
    assert abs(np.mean(reps) - 0.05) < 3 * np.sqrt(0.05 * 0.95 / len(reps))


def test_validation_rows_with_one_level_are_untestable():
    """An omnibus, interaction or aggregate relation whose validation rows hold one level of its
    factor (a sister task that ran one arm) is untestable, not a crash."""
    rng = np.random.default_rng(2)
    val = _two_groups(rng, 4, 1.0)
    val = val[val["A"] == "a1"].assign(B=["x", "y"] * 2, task=["t"] * 4)
    schema = T.Schema({"A": T.CATEGORICAL, "B": T.CATEGORICAL}, ("y",), "seed", None, {}, ())
    anova = _rel(tool="anova", design=T.K_LEVEL, factor="A", metric="y", relation=T.MODULATES)
    inter = _rel(tool="ols_interaction", design=T.INTERACTION, factor="A", factor_b="B",
                 metric="y", relation=T.INTERACTS)  # fmt: skip
    for r in (anova, inter):
        assert R.validate(r, val, schema, "").status == R.UNTESTABLE
    both = _two_groups(rng, 4, 3.0)  # both levels present: the same relation is tested
    assert R.validate(anova, both, schema, "").status in (R.REPLICATED, R.FAILED)


def test_sweep_replication_split_and_rates():
    df = planted.planted_table(np.random.default_rng(0))
    res = pipeline.run_sweep(
        planted.sweep(df), analyze.AnalysisConfig(reps=0, permutations=100), [], "seeds"
    )
    rep = res.replication
    assert rep.disc_ids and rep.val_ids and not rep.disc_ids & rep.val_ids
    assert rep.disc_ids | rep.val_ids == set(df["run_id"])
    rates = R.rates(rep).set_index(["by", "name"])
    assert rates.loc[("tool", "welch_t"), "rate"] == 1.0  # the planted A effect replicates
    statuses = {
        h["relation"].tool: h["replication"] for h in res.hypotheses if h["relation"].factor == "A"
    }
    assert statuses["welch_t"] == R.REPLICATED


def _rel(**kw):
    base = dict(tool="welch_t", tool_version="scipy", design=T.TWO_LEVEL, factor="algo",
                metric="ret", task="", effect=1.0, effect_label="d", std_effect=1.0, ci_low=0.5,
                ci_high=1.5, p=0.01, n=10, run_ids=("r1",), level_a="sac", level_b="adarl",
                q=0.02, relation=T.INCREASES)  # fmt: skip
    return T.Relation(**(base | kw))


def test_status_of_full_data_relations():
    """A relation validated on the held-out part has that status; one the discovery part tested
    without support is "not discovered"; one it never tested (a direction only the full data
    has) is "n/a"."""
    validated, missed, absent = _rel(), _rel(metric="len"), _rel(metric="kl")
    val = R.Validation(validated.key, R.REPLICATED, 0.01, 1.0, 6, "", ("r1",))
    rep = R.Replication("seeds", (validated, _rel(metric="len", relation=T.NONE)),
                        {validated.key: val}, frozenset({"r1"}), frozenset({"r2"}))  # fmt: skip
    assert R.status_of(validated, rep) == R.REPLICATED
    assert R.status_of(missed, rep) == R.NOT_DISCOVERED
    assert R.status_of(absent, rep) == "n/a"


def test_reliability_monotone():
    grid_q = [score.reliability(q, "n/a", 1.0, 10) for q in (0.0, 0.01, 0.04, 0.5)]
    assert all(a > b for a, b in zip(grid_q[:-1], grid_q[1:], strict=True))
    reps = [score.reliability(0.01, s, 1.0, 10) for s in (R.FAILED, "n/a", R.REPLICATED)]
    assert reps[0] < reps[1] < reps[2]
    assert score.reliability(0.01, "n/a", 0.0, 10) < score.reliability(0.01, "n/a", 1.0, 10)
    ns = [score.reliability(0.01, "n/a", 1.0, n) for n in (2, 5, 50)]
    assert ns[0] < ns[1] < ns[2]
    assert score.ci_score(_rel()) == 1.0 and score.ci_score(_rel(ci_low=-0.1)) == 0.0


def test_novelty_against_prior():
    r = _rel()
    agree = [score.Expectation("algo=adarl", T.INCREASES, "ret", vs="sac")]
    contra = [score.Expectation("algo=adarl", T.DECREASES, "ret", vs="sac")]
    swapped = [score.Expectation("algo=sac", T.DECREASES, "ret", vs="adarl")]  # same claim
    assert score.novelty(r, agree) == score.AGREE == score.novelty(r, swapped)
    assert score.novelty(r, []) == score.ABSENT
    assert score.novelty(r, contra) == score.CONTRADICT > score.novelty(r, [])
    assert score.novelty(r, [score.Expectation("algo=adarl", T.INCREASES, "other")]) == score.ABSENT


def test_prior_from_earlier_graph_makes_edge_known():
    df = planted.planted_table(np.random.default_rng(0))
    cfg = analyze.AnalysisConfig(reps=0, permutations=100)
    first = pipeline.run_sweep(planted.sweep(df), cfg, [], "none")
    prior = score.prior_from_graph(graph.to_json(first.graph))
    again = pipeline.run_sweep(planted.sweep(df), cfg, prior, "none")
    assert {h["novelty"] for h in first.hypotheses} == {score.ABSENT}
    assert {h["novelty"] for h in again.hypotheses} == {score.AGREE}


def test_pareto_front_hand_built():
    pts = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.4, 0.4], [0.9, 0.0], [0.2, 0.2]])
    assert score.pareto_ranks(pts).tolist() == [0, 0, 0, 1, 1, 2]
    assert score.pareto_ranks_reference(pts).tolist() == [0, 0, 0, 1, 1, 2]


@pytest.mark.parametrize("levels", [3, 7, 0])
def test_pareto_ranks_match_peeling(levels):
    """The O(N log N) fronts equal the peeling reference on fresh points, with ties and
    duplicates (novelty takes 3 values, reliability ``levels`` rounded values; 0: continuous)."""
    rng = np.random.default_rng(levels)
    for n in (1, 2, 17, 300):
        rel = rng.uniform(size=n)
        rel = np.round(rel * levels) / levels if levels else rel
        pts = np.stack([rel, rng.choice([0.0, 0.5, 1.0], n)], 1)
        np.testing.assert_array_equal(score.pareto_ranks(pts), score.pareto_ranks_reference(pts))


def test_proposer_targets_widest_ci():
    table = pd.DataFrame({"algo": ["sac", "adarl", "ppo"] * 2, "seed": ["0", "0", "0", "1", "1", "1"],
                          "run_dir": ["/r/sac", "/r/adarl", "/r/ppo"] * 2, "run_id": list("abcdef")})  # fmt: skip
    schema = T.Schema({"algo": T.CATEGORICAL}, (), "seed", None, {}, ())
    narrow = _rel(ci_low=0.9, ci_high=1.1)
    wide = _rel(level_b="ppo", ci_low=-0.5, ci_high=2.5)
    hyps = [
        {"id": "h1", "relation": narrow, "novelty": 0.5},
        {"id": "h2", "relation": wide, "novelty": 0.5},
    ]
    p = score.propose_next(hyps, table, schema)
    assert p.hypothesis == "h2"
    assert p.cells == ({"algo": "sac"}, {"algo": "ppo"})
    assert p.template_runs == ("/r/sac", "/r/ppo") and p.seeds == (2, 3, 4)


def test_task_split_needs_tasks():
    df = planted.planted_table(np.random.default_rng(0), n=4)
    with pytest.raises(ValueError, match="needs two tasks"):
        pipeline.run_sweep(planted.sweep(df), analyze.AnalysisConfig(reps=0), [], "task")
