"""Module 3, hypotheses and the typed relation graph (SAFETY_AND_ANALYSIS.md §2.2).

A hypothesis is a supported ``Relation`` (q < alpha) rendered by a template with its provenance.
The graph is a ``networkx.MultiDiGraph`` whose nodes are typed ``factor``, ``level``,
``algorithm`` (the levels of an algorithm factor), ``metric``, ``task`` and ``direction`` (an
open question: tested, nothing supported), and whose edges are typed ``increases``, ``decreases``,
``no_detectable_effect``, ``interacts_with`` and ``modulates``; each edge carries the relation's
numbers, tool and version, and run ids. JSON export is lossless; GraphML stores run ids as a JSON
string because GraphML attributes are scalars.
"""

from __future__ import annotations

import json
import zlib

import networkx as nx

from hypotheses import types as T

ALGO_FACTORS = ("algo", "rl.algo", "algorithm")


def fmt(x: float | None) -> str:
    return "NA" if x is None else f"{x:.3g}"


def statement(r: T.Relation, max_runs: int = 4) -> str:
    """Templated statement with full provenance, e.g. "`algo`=hpt (vs ppo) increases
    `eval/pass@8` by +0.19 [0.12, 0.27] on task=cpu (welch_t, p=..., q=..., n=6, runs=[...])"."""
    where = f" on task={r.task}" if r.task else ""
    if r.design == T.AGGREGATE:
        where = f" across `{r.factor_b}` (scores min-max normalised per task)"
    runs = ", ".join(r.run_ids[:max_runs]) + (", ..." if len(r.run_ids) > max_runs else "")
    prov = f"({r.tool}, p={fmt(r.p)}, q={fmt(r.q)}, n={r.n}, runs=[{runs}])"
    ci = f"[{fmt(r.ci_low)}, {fmt(r.ci_high)}]"
    size = f"{r.effect_label} {r.effect:+.3g} {ci}"
    if r.relation == T.NO_EFFECT:
        head = f"`{r.factor}`={r.level_b} (vs {r.level_a}) has no detectable effect on `{r.metric}`"
        return f"{head}: {size} within +-{fmt(r.bound)}{where} {prov}"
    if r.relation == T.INTERACTS:
        return f"`{r.factor}` x `{r.factor_b}` interact on `{r.metric}`: {size}{where} {prov}"
    if r.relation == T.MODULATES:
        return f"`{r.factor}` modulates `{r.metric}` ({size}){where} {prov}"
    verb = r.relation if r.relation != T.NONE else "has no supported effect on"
    if r.level_b:
        return (
            f"`{r.factor}`={r.level_b} (vs {r.level_a}) {verb} `{r.metric}` by {size}{where} {prov}"
        )
    return f"Increasing `{r.factor}` {verb} `{r.metric}`: {size}{where} {prov}"


def _level_node(factor: str, level: str) -> tuple[str, str]:
    if factor in ALGO_FACTORS:
        return f"algorithm:{level}", "algorithm"
    return f"level:{factor}={level}", "level"


def _source(g: nx.MultiDiGraph, r: T.Relation) -> str:
    g.add_node(f"factor:{r.factor}", type="factor", name=r.factor)
    if not r.level_b:
        return f"factor:{r.factor}"
    node, kind = _level_node(r.factor, r.level_b)
    g.add_node(node, type=kind, name=r.level_b, factor=r.factor)
    return node


def edge_attrs(r: T.Relation, hyp_id: str) -> dict:
    d = r.to_dict()
    d.pop("relation")
    return {"type": r.relation, "hypothesis": hyp_id, **{k: v for k, v in d.items()}}


def hypothesis_id(r: T.Relation) -> str:
    """Stable id of a relation (from its key, not its numbers)."""
    return f"h{zlib.crc32(r.key.encode()):08x}"


def _direction_node(r: T.Relation) -> str:
    node = f"direction:{r.factor}{'x' + r.factor_b if r.factor_b else ''}->{r.metric}"
    return node + (f"@{r.task}" if r.task else "")


def build_graph(relations: list[T.Relation], task_column: str | None = None) -> nx.MultiDiGraph:
    """Relation graph over every relation: supported ones become typed edges (keyed by their
    hypothesis id); a direction no tool supported leaves a ``direction`` node (open question)."""
    g = nx.MultiDiGraph()
    supported = {_direction_node(r) for r in relations if r.relation != T.NONE}
    for r in relations:
        g.add_node(f"metric:{r.metric}", type="metric", name=r.metric)
        if r.task:
            g.add_node(f"task:{r.task}", type="task", name=r.task)
        if r.relation == T.NONE:
            node = _direction_node(r)
            if node not in supported:
                g.add_node(node, type="direction", factor=r.factor, metric=r.metric, task=r.task)
            continue
        hid = hypothesis_id(r)
        if r.relation == T.INTERACTS:
            b_type = "task" if r.factor_b == task_column else "factor"
            g.add_node(f"factor:{r.factor}", type="factor", name=r.factor)
            g.add_node(f"factor:{r.factor_b}", type=b_type, name=r.factor_b)
            g.add_edge(f"factor:{r.factor}", f"factor:{r.factor_b}", key=hid, **edge_attrs(r, hid))
            continue
        g.add_edge(_source(g, r), f"metric:{r.metric}", key=hid, **edge_attrs(r, hid))
    for n, data in g.nodes(data=True):
        if data["type"] == "direction":
            g.nodes[n]["status"] = "open"
    return g


def to_json(g: nx.MultiDiGraph) -> str:
    """Deterministic, lossless JSON (sorted nodes and edges)."""
    nodes = [{"id": n, **g.nodes[n]} for n in sorted(g.nodes)]
    edges = sorted(
        ({"source": u, "target": v, "key": k, **d} for u, v, k, d in g.edges(keys=True, data=True)),
        key=lambda e: (e["source"], e["target"], e["key"]),
    )
    return json.dumps({"nodes": nodes, "edges": edges}, indent=1, sort_keys=True)


def from_json(text: str) -> nx.MultiDiGraph:
    data = json.loads(text)
    g = nx.MultiDiGraph()
    for n in data["nodes"]:
        g.add_node(n["id"], **{k: v for k, v in n.items() if k != "id"})
    for e in data["edges"]:
        attrs = {k: v for k, v in e.items() if k not in ("source", "target", "key")}
        g.add_edge(e["source"], e["target"], key=e["key"], **attrs)
    return g


def write_graphml(g: nx.MultiDiGraph, path: str) -> None:
    """GraphML copy: lists as JSON strings, missing numbers as NaN (GraphML has no null)."""
    h = nx.MultiDiGraph()
    for n, d in g.nodes(data=True):
        h.add_node(n, **d)
    for u, v, k, d in g.edges(keys=True, data=True):
        flat = {a: json.dumps(b) if isinstance(b, list) else b for a, b in d.items()}
        h.add_edge(u, v, key=k, **{a: float("nan") if b is None else b for a, b in flat.items()})
    nx.write_graphml(h, path)
