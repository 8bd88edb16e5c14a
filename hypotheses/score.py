"""Feature B3, reliability x novelty scoring, Pareto ranking and the next sweep
(SAFETY_AND_ANALYSIS.md §2.4; PROTEUS reports hypotheses that "balance reliability and novelty").

* reliability: a weighted mean of four scores, each monotone in one input: 1 - q; replication
  (replicated 1, untested 0.5, failed 0); the 95% CI excluding 0 (or lying inside the
  equivalence bound for ``no_detectable_effect``); sample size ``1 - 1/sqrt(n)``.
* novelty against a prior-knowledge graph (hand-written expectations plus earlier sweeps'
  graphs): agreeing with the prior 0, absent from it 0.5, contradicting it 1.
* ranking: successive Pareto fronts of (reliability, novelty), ties by reliability then id.
* next sweep: among the top-ranked hypotheses, the one with the widest relative CI x novelty;
  more seeds for the cells that hypothesis compares.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable

import numpy as np

from hypotheses import replicate as R
from hypotheses import types as T

WEIGHTS = {"q": 0.4, "replication": 0.3, "ci": 0.15, "n": 0.15}
REPLICATION_SCORE = {R.REPLICATED: 1.0, R.FAILED: 0.0}
AGREE, ABSENT, CONTRADICT = 0.0, 0.5, 1.0
OPPOSITE = {T.INCREASES: T.DECREASES, T.DECREASES: T.INCREASES}


def ci_score(r: T.Relation) -> float:
    if r.ci_low is None or r.ci_high is None:
        return 0.5
    if r.relation == T.NO_EFFECT:
        return float(r.bound is not None and -r.bound <= r.ci_low and r.ci_high <= r.bound)
    return float(r.ci_low > 0 or r.ci_high < 0)


def reliability(q: float, replication: str, ci: float, n: int) -> float:
    """Monotone: decreasing in q, increasing in replication, CI score and n."""
    parts = {
        "q": 1.0 - min(max(q, 0.0), 1.0),
        "replication": REPLICATION_SCORE.get(replication, 0.5),
        "ci": ci,
        "n": 1.0 - 1.0 / np.sqrt(max(n, 1)),
    }
    return float(sum(WEIGHTS[k] * v for k, v in parts.items()))


@dataclasses.dataclass(frozen=True)
class Expectation:
    """A prior claim: ``source`` (``factor`` or ``factor=level``; ``vs`` the baseline level)
    has ``relation`` on ``metric`` (task "" matches any task)."""

    source: str
    relation: str
    metric: str
    vs: str = ""
    task: str = ""
    note: str = ""


def load_prior(path: str) -> list[Expectation]:
    with open(path) as f:
        return [Expectation(**e) for e in json.load(f)["expectations"]]


def prior_from_graph(graph_json: str) -> list[Expectation]:
    """An earlier sweep's relation graph as prior expectations."""
    out = []
    for e in json.loads(graph_json)["edges"]:
        src = f"{e['factor']}={e['level_b']}" if e["level_b"] else e["factor"]
        out.append(
            Expectation(src, e["type"], e["metric"], e["level_a"], e["task"], "earlier sweep")
        )
    return out


def _matches(e: Expectation, r: T.Relation) -> bool:
    src = f"{r.factor}={r.level_b}" if r.level_b else r.factor
    flipped = f"{r.factor}={r.level_a}" if r.level_b else ""
    same = e.source == src and e.vs in ("", r.level_a)
    swapped = e.source == flipped and e.vs == r.level_b
    return (same or swapped) and e.metric == r.metric and e.task in ("", r.task)


def novelty(r: T.Relation, prior: Iterable[Expectation]) -> float:
    """0 when the prior states the same relation, 1 when it contradicts it, 0.5 when absent."""
    score = ABSENT
    for e in prior:
        if not _matches(e, r):
            continue
        swapped = e.vs == r.level_b and bool(r.level_b)
        expected = OPPOSITE.get(e.relation, e.relation) if swapped else e.relation
        if expected == r.relation:
            return AGREE
        score = CONTRADICT
    return score


def pareto_ranks_reference(points: np.ndarray) -> np.ndarray:
    """Front index (0 = non-dominated) of each row of ``points`` [N, 2], both maximised, by
    peeling one front at a time: O(fronts x N^2), the plain reference of ``pareto_ranks``."""
    n = len(points)
    ranks = np.full(n, -1)
    remaining = np.arange(n)
    front = 0
    while remaining.size:
        p = points[remaining]
        dominated = ((p[None, :, :] >= p[:, None, :]).all(-1) & (p[None] > p[:, None]).any(-1)).any(
            1
        )
        ranks[remaining[~dominated]] = front
        remaining = remaining[dominated]
        front += 1
    return ranks


def pareto_ranks(points: np.ndarray) -> np.ndarray:
    """Front index (0 = non-dominated) of each row of ``points`` [N, 2], both maximised:
    ``pareto_ranks_reference`` in O(N log N) (a FlowRL sweep ranks thousands of hypotheses over
    hundreds of fronts, where peeling took minutes).

    Points are visited by x, then y, descending, so every earlier point has x >= the current
    one's. Along a front so visited y never decreases, so the front's last point has its largest
    y and smallest x, and it dominates the current point exactly when any member does; a point
    dominated by front k is dominated by front k - 1 too, so its front (the first that does not
    dominate it) is found by bisection."""
    pts = np.asarray(points, float)
    last: list[tuple[float, float]] = []  # each front's last point
    ranks = np.empty(len(pts), int)
    for i in np.lexsort((-pts[:, 1], -pts[:, 0])):
        x, y = pts[i]
        lo, hi = 0, len(last)
        while lo < hi:
            mid = (lo + hi) // 2
            qx, qy = last[mid]
            if qy > y or (qy == y and qx > x):  # front ``mid`` dominates (x, y)
                lo = mid + 1
            else:
                hi = mid
        if lo == len(last):
            last.append((x, y))
        else:
            last[lo] = (x, y)
        ranks[i] = lo
    return ranks


@dataclasses.dataclass(frozen=True)
class Proposal:
    """More seeds for the cells a target hypothesis compares (the next sweep)."""

    hypothesis: str
    reason: str
    cells: tuple[dict, ...]  # factor/task assignments, one per cell
    template_runs: tuple[str, ...]  # a run directory of each cell (its config is the base)
    seeds: tuple[int, ...]


def propose_next(ranked: list[dict], table, schema: T.Schema, top: int = 5, new_seeds: int = 3):
    """Targets the hypothesis with the widest relative CI x novelty among the ``top`` ranked."""
    cands = [h for h in ranked[:top] if h["relation"].level_b]
    if not cands:
        return None

    def width(h):
        r = h["relation"]
        if r.ci_low is None:
            return np.inf
        return (r.ci_high - r.ci_low) / (abs(r.effect) + 1e-12)

    target = max(cands, key=lambda h: (width(h) * max(h["novelty"], 1e-3), h["id"]))
    r = target["relation"]
    cells, runs = [], []
    for level in (r.level_a, r.level_b):
        cell = {r.factor: level} | ({schema.task: r.task} if schema.task and r.task else {})
        rows = table[np.logical_and.reduce([table[k].map(str) == str(v) for k, v in cell.items()])]
        cells.append(cell)
        runs.append(str(sorted(rows["run_dir"])[0]))
    used = [int(s.split("/")[0]) for s in table["seed"] if s.split("/")[0].isdigit()]
    start = max(used, default=-1) + 1
    reason = f"widest relative CI x novelty among the top {top}: {target['id']}"
    return Proposal(
        target["id"], reason, tuple(cells), tuple(runs), tuple(range(start, start + new_seeds))
    )
