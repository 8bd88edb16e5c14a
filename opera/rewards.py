"""Role rewards of MAPGRPO (FLOWRL.md §7.2) and answer metrics, all jittable.

* Plan, ``r_plan``: the paper's LLM judge (DeepSeek-R1 under a planning rubric) is replaced by a
  **rule-based judge** that scores a sampled plan exactly against the gold plan and the KB, with
  the project page's weights: accuracy 0.30, coherence 0.25, executability 0.25, dependency
  0.10, efficiency 0.10. The paper's ``f_logic, f_struct, f_exec`` are not defined in any source
  (§7.2 "Not found"); here f_logic = accuracy + coherence, f_struct = dependency + efficiency,
  f_exec = executability. Components (each in [0, 1]):

  - accuracy: gold steps reproduced verbatim in position / max(#gold, #predicted steps);
  - coherence: the plan is a clean sequence of well-formed steps ended by EOS (1), else the
    fraction of the 4 step slots before the first problem that are well formed, halved;
  - executability: executing the plan against the KB (exact lookup, aliases folded) gives the
    gold answer;
  - dependency: the dependency list (step i uses the placeholder of step j) equals the gold one;
  - efficiency: ``max(0, 1 - |#steps - #gold| / #gold)``.

* Analysis, ``r_ana = 0.65 EM + 0.25 1[phi = phi*] + 0.10 format``: phi* is whether the
  retrieved documents hold the fact the query asks for (aliases folded); the gold answer is the
  fact's object if so, else ``[NIL, NIL]``.
* Rewrite, ``r_rew = w1 sqrt(NDCG@k) + w2 format``: NDCG of the rewritten query's top-k against
  the gold document of the step; the weights are not published (configurable).
* EM / F1 of a two-token answer: exact match, and SQuAD token-overlap F1 (NIL tokens dropped).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from opera import retrieval
from opera.agents import parse_plan
from opera.world import (
    EOS,
    MAX_HOPS,
    NIL,
    NO,
    PH0,
    STEP_LEN,
    YES,
    Vocab,
    World,
    canonical,
    entity_of,
)

Array = jax.Array

PLAN_WEIGHTS = {
    "accuracy": 0.30,
    "coherence": 0.25,
    "executability": 0.25,
    "dependency": 0.10,
    "efficiency": 0.10,
}
ANALYSIS_WEIGHTS = {"em": 0.65, "sufficiency": 0.25, "format": 0.10}


class KB(NamedTuple):
    """The world's tables as device arrays (the reward functions' closed-over constants)."""

    kb: Array  # i32[E, R]
    doc_of_fact: Array  # i32[E, R]
    docs: Array  # i32[D, DOC_LEN]

    @classmethod
    def of(cls, world: World) -> KB:
        return cls(jnp.asarray(world.kb), jnp.asarray(world.doc_of_fact), jnp.asarray(world.docs))


def _steps(plan: Array) -> Array:
    return plan[:, : MAX_HOPS * STEP_LEN].reshape(plan.shape[0], MAX_HOPS, STEP_LEN)


def execute_plan_kb(vocab: Vocab, kb: KB, plan: Array) -> Array:
    """Jittable oracle execution of plans i32[B, PLAN_LEN] -> final entity i32[B] (-1 if not
    executable); matches :func:`opera.world.execute_plan_oracle`."""
    n_steps, _ = parse_plan(vocab, plan)
    steps = _steps(plan)
    b = plan.shape[0]
    ents = jnp.full((b, MAX_HOPS), -1, jnp.int32)
    for i in range(MAX_HOPS):
        rel = canonical(vocab, steps[:, i, 0])
        ph = jnp.clip(steps[:, i, 1] - PH0, 0, MAX_HOPS - 1)
        is_ph = (steps[:, i, 1] >= PH0) & (steps[:, i, 1] < PH0 + MAX_HOPS)
        subj = jnp.where(
            is_ph, ents[jnp.arange(b), ph], entity_of(vocab, steps[:, i, 1], steps[:, i, 2])
        )
        ok = (subj >= 0) & (rel >= 0) & (i < n_steps)
        obj = kb.kb[jnp.clip(subj, 0), jnp.clip(rel, 0)]
        ents = ents.at[:, i].set(jnp.where(ok, obj, -1))
    last = jnp.clip(n_steps - 1, 0, MAX_HOPS - 1)
    return jnp.where(n_steps > 0, ents[jnp.arange(b), last], -1)


def _dependencies(plan: Array, n_steps: Array) -> Array:
    """i32[B, H]: the step a step depends on (-1 none), -2 beyond the plan."""
    steps = _steps(plan)
    ph = steps[..., 1] - PH0
    dep = jnp.where((ph >= 0) & (ph < MAX_HOPS), ph, -1)
    return jnp.where(jnp.arange(MAX_HOPS) < n_steps[:, None], dep, -2)


def plan_components(vocab: Vocab, kb: KB, plan: Array, gold: Array, answer: Array) -> dict:
    """The five rule-judge components, each f32[B] in [0, 1] (see the module docstring)."""
    n_pred, ok = parse_plan(vocab, plan)
    n_gold, _ = parse_plan(vocab, gold)
    same = jnp.all(_steps(plan) == _steps(gold), axis=-1) & (jnp.arange(MAX_HOPS) < n_gold[:, None])
    accuracy = same.sum(-1) / jnp.maximum(jnp.maximum(n_gold, n_pred), 1)
    ends = jnp.take_along_axis(plan, (n_pred * STEP_LEN)[:, None], axis=1)[:, 0] == EOS
    coherence = jnp.where(ends & (n_pred > 0), 1.0, 0.5 * n_pred / MAX_HOPS)
    executability = (execute_plan_kb(vocab, kb, plan) == answer).astype(jnp.float32)
    dependency = jnp.all(_dependencies(plan, n_pred) == _dependencies(gold, n_gold), -1)
    efficiency = jnp.maximum(0.0, 1.0 - jnp.abs(n_pred - n_gold) / jnp.maximum(n_gold, 1))
    del ok
    return {
        "accuracy": accuracy.astype(jnp.float32),
        "coherence": coherence.astype(jnp.float32),
        "executability": executability,
        "dependency": dependency.astype(jnp.float32),
        "efficiency": efficiency.astype(jnp.float32),
    }


def plan_reward(vocab: Vocab, kb: KB, plan: Array, gold: Array, answer: Array) -> Array:
    """r_plan f32[B] = sum_c PLAN_WEIGHTS[c] * component_c."""
    comps = plan_components(vocab, kb, plan, gold, answer)
    return sum(PLAN_WEIGHTS[k] * comps[k] for k in PLAN_WEIGHTS)


def _fact(vocab: Vocab, kb: KB, query: Array) -> tuple[Array, Array, Array]:
    """(valid bool[B], gold doc i32[B], object entity i32[B]) of query [rel, a, b]."""
    rel = canonical(vocab, query[:, 0])
    subj = entity_of(vocab, query[:, 1], query[:, 2])
    valid = (rel >= 0) & (subj >= 0)
    s, r = jnp.clip(subj, 0), jnp.clip(rel, 0)
    return valid, kb.doc_of_fact[s, r], kb.kb[s, r]


def analysis_targets(vocab: Vocab, kb: KB, query: Array, doc_ids: Array) -> tuple[Array, Array]:
    """(phi* bool[B], gold output i32[B, 3]) for an analysis call on query i32[B, 3] with the
    retrieved documents i32[B, k]."""
    valid, doc, obj = _fact(vocab, kb, query)
    phi = valid & jnp.any(doc_ids == doc[:, None], axis=-1)
    a, b = vocab.name(obj)
    yes = jnp.stack([jnp.full_like(a, YES), a, b], -1)
    no = jnp.stack([jnp.full_like(a, NO), jnp.full_like(a, NIL), jnp.full_like(a, NIL)], -1)
    return phi, jnp.where(phi[:, None], yes, no).astype(jnp.int32)


def _is_name(vocab: Vocab, a: Array, b: Array) -> Array:
    return entity_of(vocab, a, b) >= 0


def analysis_reward(vocab: Vocab, kb: KB, query: Array, doc_ids: Array, out: Array) -> Array:
    """r_ana f32[B] = 0.65 EM(answer) + 0.25 1[phi = phi*] + 0.10 format."""
    phi, gold = analysis_targets(vocab, kb, query, doc_ids)
    em = jnp.all(out[:, 1:] == gold[:, 1:], -1)
    suff = (out[:, 0] == YES) == phi
    fmt = ((out[:, 0] == YES) & _is_name(vocab, out[:, 1], out[:, 2])) | (
        (out[:, 0] == NO) & (out[:, 1] == NIL) & (out[:, 2] == NIL)
    )
    w = ANALYSIS_WEIGHTS
    return w["em"] * em + w["sufficiency"] * suff + w["format"] * fmt


def rewrite_reward(vocab: Vocab, kb: KB, retriever, query: Array, new_query: Array, k: int,
                   w_ndcg: float, w_format: float) -> Array:  # fmt: skip
    """r_rew f32[B] = w_ndcg sqrt(NDCG@k(new_query; gold doc of query)) + w_format format."""
    valid, doc, _ = _fact(vocab, kb, query)
    relevant = (jnp.arange(kb.docs.shape[0])[None] == doc[:, None]) & valid[:, None]
    ndcg = retrieval.ndcg_at_k(retrieval.top_k(retriever, new_query, k), relevant)
    fmt = (canonical(vocab, new_query[:, 0]) >= 0) & _is_name(
        vocab, new_query[:, 1], new_query[:, 2]
    )
    return w_ndcg * jnp.sqrt(ndcg) + w_format * fmt


def answer_em_f1(pred: Array, gold: Array) -> tuple[Array, Array]:
    """EM and token-F1 of two-token answers pred/gold i32[B, 2] (NIL tokens dropped from pred):
    f32[B] each. Gold tokens are distinct (first- vs last-name tokens)."""
    em = jnp.all(pred == gold, -1).astype(jnp.float32)
    real = pred != NIL
    # gold tokens are distinct, so the clipped overlap counts the gold tokens found in pred
    overlap = jnp.sum(jnp.any(real[:, :, None] & (pred[:, :, None] == gold[:, None, :]), 1), -1)
    n_pred = jnp.maximum(real.sum(-1), 1)
    precision, recall = overlap / n_pred, overlap / 2.0
    f1 = jnp.where(overlap > 0, 2 * precision * recall / jnp.maximum(precision + recall, 1e-9), 0.0)
    return em, f1.astype(jnp.float32)


def answer_em_f1_reference(pred: np.ndarray, gold: np.ndarray) -> tuple[float, float]:
    """Plain SQuAD-style EM/F1 of one answer (token lists, NIL dropped from pred)."""
    p = [int(t) for t in pred if t != NIL]
    g = [int(t) for t in gold]
    em = float(list(pred) == g)
    common = sum(min(p.count(t), g.count(t)) for t in set(p))
    if common == 0:
        return em, 0.0
    prec, rec = common / len(p), common / len(g)
    return em, 2 * prec * rec / (prec + rec)
