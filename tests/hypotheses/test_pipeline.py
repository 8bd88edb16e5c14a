"""Planted-truth tests of the sweep-to-hypothesis pipeline (SAFETY_AND_ANALYSIS.md §2.2)."""

import numpy as np
import pytest

from hypotheses import analyze, explore, graph, pipeline
from hypotheses import types as T
from tests.hypotheses import planted

FAST = analyze.AnalysisConfig(reps=200, permutations=200)


@pytest.fixture(scope="module")
def result():
    df = planted.planted_table(np.random.default_rng(0))
    return pipeline.run_sweep(planted.sweep(df), FAST, prior=[], split="seeds")


def _supported(res, **kw):
    return [r for r in res.relations if r.relation != T.NONE
            and all(getattr(r, k) == v for k, v in kw.items())]  # fmt: skip


def test_planted_effect_found(result):
    hits = _supported(result, tool="welch_t", factor="A", metric="y", level_b="a1")
    assert hits and hits[0].relation == T.INCREASES and hits[0].q < 0.05
    assert hits[0].ci_low > 0
    assert result.graph.has_edge("level:A=a1", "metric:y")


def test_planted_interaction_found(result):
    hits = _supported(result, tool="ols_interaction", factor="A", factor_b="C", metric="y")
    assert hits and hits[0].relation == T.INTERACTS and hits[0].q < 0.05
    assert hits[0].effect > 0  # d_ac = +1.5
    assert result.graph.has_edge("factor:A", "factor:C")
    assert not _supported(result, factor="B", metric="y", tool="welch_t")  # the null factor
    assert not _supported(result, metric="z", tool="welch_t")  # the null metric


def test_every_edge_run_id_exists(result):
    ids = set(result.sweep.table["run_id"])
    edges = list(result.graph.edges(data=True))
    assert edges
    for _, _, d in edges:
        assert d["run_ids"] and set(d["run_ids"]) <= ids


def test_deterministic_and_lossless_json(result):
    df = planted.planted_table(np.random.default_rng(0))
    again = pipeline.run_sweep(planted.sweep(df), FAST, prior=[], split="seeds")
    text = graph.to_json(result.graph)
    assert graph.to_json(again.graph) == text
    back = graph.from_json(text)
    assert graph.to_json(back) == text
    assert sorted(back.edges(keys=True, data=True)) == sorted(
        result.graph.edges(keys=True, data=True)
    )
    for r in result.relations:
        assert T.Relation.from_dict(r.to_dict()) == r


def test_graphml_export(result, tmp_path):
    import networkx as nx

    path = tmp_path / "g.graphml"
    graph.write_graphml(result.graph, str(path))
    g = nx.read_graphml(path)
    assert g.number_of_edges() == result.graph.number_of_edges()


def test_null_sweeps_fdr():
    """Mean false-discovery proportion over 200 null sweeps <= alpha + tolerance (every test of a
    sweep in one BH family; all directional/omnibus/interaction discoveries are false)."""
    cfg = analyze.AnalysisConfig(reps=0, permutations=100)
    fdp = []
    for df in planted.null_tables(np.random.default_rng(1), 200):
        schema = explore.infer_schema(df, ("A", "B"))
        rels = analyze.analyze(df, schema, cfg)
        found = [r for r in rels if r.relation != T.NONE]
        false = [r for r in found if r.relation != T.NO_EFFECT]
        fdp.append(len(false) / max(len(found), 1))
    assert np.mean(fdp) <= cfg.alpha + 0.02, np.mean(fdp)


def test_open_directions_are_nodes(result):
    """The null interaction A x B stays an open question; the null main effect B gets the
    equivalence edge (TOST within +-0.5 SD at n = 64); supported A -> y leaves no open node."""
    g = result.graph
    assert g.nodes["direction:AxB->y"]["type"] == "direction"
    assert "direction:A->y" not in g and "direction:B->y" not in g
    b_edges = {
        d["type"] for *_, d in g.edges(data=True) if d["factor"] == "B" and d["metric"] == "y"
    }
    assert b_edges == {T.NO_EFFECT}
    types = {d["type"] for _, d in g.nodes(data=True)}
    assert types <= {"factor", "level", "algorithm", "metric", "task", "direction"}
    assert {d["type"] for *_, d in g.edges(data=True)} <= set(T.EDGE_TYPES)


def test_run_sweep_compares_factors_within_a_protocol():
    """The pipeline stratifies before it tests: two evaluation grids of one environment give no
    relation for the schedule that changed with the grid (a raw -300 "effect"), and its result
    carries the stratified table."""
    res = pipeline.run_sweep(planted.two_protocol_sweep(), FAST, prior=[], split="none")
    assert explore.STRATUM in res.sweep.table and res.schema.task == explore.STRATUM
    assert not [r for r in res.relations if "sac.lr_schedule" in (r.factor, r.factor_b)]
    assert {r.factor for r in res.relations} == {"rl.algo"}
