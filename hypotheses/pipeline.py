"""The loop explore -> analyze -> hypothesize -> validate -> score -> propose for one sweep
(SAFETY_AND_ANALYSIS.md §2.2-2.4), as plain functions over typed records."""

from __future__ import annotations

import dataclasses
import warnings

import networkx as nx
import numpy as np
import pandas as pd

from hypotheses import analyze, explore, graph, score
from hypotheses import replicate as R
from hypotheses import types as T


@dataclasses.dataclass(frozen=True)
class SweepResult:
    sweep: T.Sweep
    schema: T.Schema
    directions: tuple[T.Direction, ...]
    relations: tuple[T.Relation, ...]  # every test, q over the sweep
    replication: R.Replication | None
    hypotheses: tuple[dict, ...]  # supported relations, ranked
    graph: nx.MultiDiGraph
    proposal: score.Proposal | None


def choose_split(df: pd.DataFrame, schema: T.Schema, min_n: int) -> tuple[str, tuple | None]:
    """Sister-task split ("task") when two tasks each cross a factor, else held-out "seeds"."""
    if schema.task:
        tasks = [t for t, sub in df.groupby(df[schema.task].map(str))
                 if explore.main_directions(sub, t, schema, min_n)]  # fmt: skip
        tasks.sort(key=lambda t: (-int((df[schema.task].map(str) == t).sum()), t))
        if len(tasks) >= 2:
            return "task", (tasks[0], tasks[1])
    return "seeds", None


def hypotheses_json(hyps) -> list[dict]:
    """Ranked hypotheses as plain JSON records (relation, scores, validation)."""
    out = []
    for h in hyps:
        v = h.get("validation")
        out.append({"id": h["id"], "statement": h["statement"], "front": h["front"],
                    "reliability": h["reliability"], "novelty": h["novelty"],
                    "replication": h["replication"],
                    "validation": dataclasses.asdict(v) if v is not None else None,
                    "relation": h["relation"].to_dict()})  # fmt: skip
    return out


def rank(relations, rep: R.Replication | None, prior: list[score.Expectation]) -> list[dict]:
    """Supported relations as hypotheses with reliability, novelty and Pareto front."""
    hyps = []
    for r in relations:
        if r.relation == T.NONE:
            continue
        status = R.status_of(r, rep) if rep else "n/a"
        check = rep.validations.get(r.key) if rep else None
        rel = score.reliability(r.q, status, score.ci_score(r), r.n)
        hyps.append({"id": graph.hypothesis_id(r), "relation": r, "replication": status,
                     "validation": check,
                     "reliability": rel, "novelty": score.novelty(r, prior),
                     "statement": graph.statement(r)})  # fmt: skip
    if not hyps:
        return []
    fronts = score.pareto_ranks(np.array([[h["reliability"], h["novelty"]] for h in hyps]))
    for h, f in zip(hyps, fronts, strict=True):
        h["front"] = int(f)
    return sorted(hyps, key=lambda h: (h["front"], -h["reliability"], -h["novelty"], h["id"]))


def run_sweep(sweep: T.Sweep, cfg: analyze.AnalysisConfig, prior: list[score.Expectation],
              split: str = "auto", holdout: float = 0.4) -> SweepResult:  # fmt: skip
    """Every step for one sweep; deterministic for fixed inputs."""
    # near-constant groups (a collapsed policy) make scipy warn; the p-values stay valid
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return _run_sweep(sweep, cfg, prior, split, holdout)


def _run_sweep(sweep, cfg, prior, split, holdout) -> SweepResult:
    sweep = explore.stratify(sweep)
    schema = explore.infer_schema(sweep.table, sweep.config_columns)
    dirs = tuple(explore.directions(sweep.table, schema, cfg.min_n))
    relations = analyze.correct(analyze.run_tools(sweep.table, schema, dirs, cfg), cfg.alpha)
    tasks = None
    if split in ("auto", "task"):
        chosen, tasks = choose_split(sweep.table, schema, cfg.min_n)
        if split == "task" and chosen != "task":
            raise ValueError(
                f"sweep {sweep.name!r}: split 'task' needs two tasks that cross a factor"
            )
        split = chosen
    rep = None
    if dirs and split != "none":
        rep = R.replicate(sweep.table, schema, cfg, split, holdout, tasks)
    hyps = rank(relations, rep, prior)
    g = graph.build_graph(list(relations), schema.task)
    proposal = score.propose_next(hyps, sweep.table, schema) if hyps else None
    return SweepResult(sweep, schema, dirs, tuple(relations), rep, tuple(hyps), g, proposal)
