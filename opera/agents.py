"""The three OPERA agents as small causal LMs (``ssm.lm``) and the jitted executor.

Interfaces (token layouts; FLOWRL.md §7.1):

* Plan agent: ``[PLAN, question(QUESTION_LEN)] -> plan(PLAN_LEN)``: structured steps
  ``[relation, arg_a, arg_b]`` where the argument is an entity name or the placeholder
  ``[PH_j, NIL]`` ("[entity from step j+1]", the step's dependency), then EOS.
* Analysis-Answer agent: ``[ANA, query(3), (DOC, doc(DOC_LEN)) x k] -> [YES|NO, a, b]``: the
  sufficiency judgement phi and the extracted answer (``[NO, NIL, NIL]`` when insufficient).
* Rewrite agent: ``[REW, query(3)] -> query'(3)``: a reformulated retrieval query.

Executor (OPERA's Reason-Execute loop): plan -> for each step (resolve placeholders with earlier
answers) retrieve -> analyse -> while insufficient and fewer than ``max_rewrites`` rewrites:
rewrite -> retrieve -> analyse; the answer of the last step is the final answer. The number of
steps is capped by the plan length (``MAX_HOPS``). Everything is fixed-shape and jittable.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from opera import retrieval
from opera.world import (
    ANA,
    DOC,
    DOC_LEN,
    EOS,
    MAX_HOPS,
    NIL,
    PH0,
    PLAN,
    PLAN_LEN,
    QUESTION_LEN,
    REW,
    STEP_LEN,
    YES,
    Vocab,
    canonical,
    entity_of,
)
from ssm import lm

Array = jax.Array
PLAN_PROMPT_LEN = 1 + QUESTION_LEN
ANSWER_LEN = 3
QUERY_LEN = 3
REW_PROMPT_LEN = 1 + QUERY_LEN


def ana_prompt_len(k: int) -> int:
    return 1 + QUERY_LEN + k * (1 + DOC_LEN)


class Agents(NamedTuple):
    """Parameters of the three roles (the single-agent baseline passes one tree three times)."""

    plan: Any
    analysis: Any
    rewrite: Any


class ExecConfig(NamedTuple):
    """Static executor settings: retrieval depth, rewrite cap, sampling temperature (0 greedy)."""

    top_k: int = 2
    max_rewrites: int = 1
    use_rewrite: bool = True
    temperature: float = 0.0


class Trace(NamedTuple):
    """One executed pipeline per row (B rows, H = MAX_HOPS steps, A = 1 + max_rewrites analysis
    calls per step, R = max_rewrites).

    plan_prompt i32[B, 8], plan i32[B, PLAN_LEN], n_steps i32[B]; step_query i32[B, H, 3] (the
    step's first query, placeholders resolved); ana_prompt i32[B, H, A, Lana]; ana_docs
    i32[B, H, A, k]; ana_out i32[B, H, A, 3]; ana_valid f32[B, H, A]; rew_prompt i32[B, H, R, 4];
    rew_out i32[B, H, R, 3]; rew_valid f32[B, H, R]; answers i32[B, H, 2]; final i32[B, 2].
    """

    plan_prompt: Array
    plan: Array
    n_steps: Array
    step_query: Array
    ana_prompt: Array
    ana_docs: Array
    ana_out: Array
    ana_valid: Array
    rew_prompt: Array
    rew_out: Array
    rew_valid: Array
    answers: Array
    final: Array


def sample(model: lm.LM, params, prompt: Array, key: Array, n: int, temperature: float) -> Array:
    """Samples ``n`` tokens after ``prompt`` i32[B, P] with full causal forwards (one per new
    token; prompts here are < 30 tokens, so this beats a sequential prefill on CPU). Returns the
    response i32[B, n]. Greedy when ``temperature == 0``; same distribution as
    :func:`ssm.lm.generate` (tested against it)."""
    b, p = prompt.shape
    buf = jnp.concatenate([prompt, jnp.zeros((b, n), jnp.int32)], axis=1)
    keys = jax.random.split(key, n)

    def body(i, buf):
        logits, _ = model.apply(params, buf)
        last = jax.lax.dynamic_index_in_dim(logits, p - 1 + i, axis=1, keepdims=False)
        tok = lm.sample_token(keys[i], last, jnp.float32(temperature), jnp.float32(1.0))
        return jax.lax.dynamic_update_slice_in_dim(buf, tok[:, None], p + i, axis=1)

    return jax.lax.fori_loop(0, n, body, buf)[:, p:]


def response_logprobs(model: lm.LM, params, prompt: Array, response: Array) -> Array:
    """log pi(response_t | prompt, response_<t): f32[B, n] for prompt i32[B, P], response
    i32[B, n] (``ssm.lm.token_logprobs`` on the concatenation)."""
    seq = jnp.concatenate([prompt, response], axis=1)
    return lm.token_logprobs(model, params, seq)[:, prompt.shape[1] - 1 :]


def plan_mask(plan: Array) -> Array:
    """Response mask of plans, f32[B, PLAN_LEN]: tokens up to and including the first EOS."""
    is_eos = plan == EOS
    before = jnp.cumsum(is_eos, axis=-1) - is_eos
    return (before == 0).astype(jnp.float32)


def parse_plan(vocab: Vocab, plan: Array) -> tuple[Array, Array]:
    """(n_steps i32[B], well_formed bool[B, H]): a step is well formed when its relation is a
    (canonical or alias) relation token and its argument is an entity name or a placeholder
    pointing at an earlier step; ``n_steps`` counts the well-formed steps before the first
    EOS or malformed step."""
    steps = plan[:, : MAX_HOPS * STEP_LEN].reshape(plan.shape[0], MAX_HOPS, STEP_LEN)
    rel_ok = canonical(vocab, steps[..., 0]) >= 0
    ent_ok = entity_of(vocab, steps[..., 1], steps[..., 2]) >= 0
    ph = steps[..., 1] - PH0
    ph_ok = (ph >= 0) & (ph < jnp.arange(MAX_HOPS)) & (steps[..., 2] == NIL)
    ok = rel_ok & (ent_ok | ph_ok)
    n_steps = jnp.sum(jnp.cumprod(ok, axis=-1), axis=-1).astype(jnp.int32)
    return n_steps, ok


def make_ana_prompt(docs: Array, query: Array, doc_ids: Array) -> Array:
    """[ANA, query, (DOC, doc) x k]: i32[B, ana_prompt_len(k)]."""
    b, k = doc_ids.shape
    sep = jnp.full((b, k, 1), DOC, jnp.int32)
    body = jnp.concatenate([sep, docs[doc_ids]], axis=-1).reshape(b, -1)
    return jnp.concatenate([jnp.full((b, 1), ANA, jnp.int32), query, body], axis=1)


def _resolve(step: Array, answers: Array) -> Array:
    """Query [rel, name] for a plan step, placeholders replaced by earlier answers: i32[B, 3]."""
    ph = step[:, 1] - PH0
    is_ph = (ph >= 0) & (ph < MAX_HOPS)
    earlier = jnp.take_along_axis(answers, jnp.clip(ph, 0, MAX_HOPS - 1)[:, None, None], 1)[:, 0]
    arg = jnp.where(is_ph[:, None], earlier, step[:, 1:])
    return jnp.concatenate([step[:, :1], arg], axis=1)


class _Ctx(NamedTuple):
    model: lm.LM
    agents: Agents
    retriever: retrieval.Retriever
    docs: Array
    cfg: ExecConfig


def _analyse(ctx: _Ctx, query: Array, key: Array) -> tuple[Array, Array, Array]:
    doc_ids = retrieval.top_k(ctx.retriever, query, ctx.cfg.top_k)
    prompt = make_ana_prompt(ctx.docs, query, doc_ids)
    out = sample(ctx.model, ctx.agents.analysis, prompt, key, ANSWER_LEN, ctx.cfg.temperature)
    return prompt, doc_ids, out


def _run_step(ctx: _Ctx, query: Array, active: Array, key: Array):
    """Retrieve -> analyse -> (rewrite -> retrieve -> analyse)* for one plan step."""
    keys = jax.random.split(key, 2 * ctx.cfg.max_rewrites + 1)
    prompt, doc_ids, out = _analyse(ctx, query, keys[0])
    calls = [(prompt, doc_ids, out, active)]
    rews = []
    for r in range(ctx.cfg.max_rewrites):
        need = active & (out[:, 0] != YES) & ctx.cfg.use_rewrite
        rew_prompt = jnp.concatenate([jnp.full((query.shape[0], 1), REW, jnp.int32), query], 1)
        new_q = sample(ctx.model, ctx.agents.rewrite, rew_prompt, keys[2 * r + 1], QUERY_LEN,
                       ctx.cfg.temperature)  # fmt: skip
        p2, d2, o2 = _analyse(ctx, new_q, keys[2 * r + 2])
        out = jnp.where(need[:, None], o2, out)
        query = jnp.where(need[:, None], new_q, query)
        calls.append((p2, d2, o2, need))
        rews.append((rew_prompt, new_q, need))
    answer = jnp.where((out[:, :1] == YES) & active[:, None], out[:, 1:], NIL)
    return calls, rews, answer


def execute(model, agents: Agents, retriever, docs: Array, vocab: Vocab, plan_prompt: Array,
            plan: Array, key: Array, cfg: ExecConfig) -> Trace:  # fmt: skip
    """Runs the plan (i32[B, PLAN_LEN]) through retrieve/analyse/rewrite; see the module
    docstring. Returns the :class:`Trace`."""
    ctx = _Ctx(model, agents, retriever, docs, cfg)
    n_steps, _ = parse_plan(vocab, plan)
    steps = plan[:, : MAX_HOPS * STEP_LEN].reshape(plan.shape[0], MAX_HOPS, STEP_LEN)
    answers = jnp.full((plan.shape[0], MAX_HOPS, 2), NIL, jnp.int32)

    def body(carry, j):
        answers, key = carry
        key, sub = jax.random.split(key)
        query = _resolve(jnp.take(steps, j, axis=1), answers)
        calls, rews, answer = _run_step(ctx, query, j < n_steps, sub)
        answers = jax.lax.dynamic_update_slice_in_dim(answers, answer[:, None], j, axis=1)
        stack = lambda xs, i: jnp.stack([x[i] for x in xs], axis=1)  # noqa: E731
        outs = (query, *(stack(calls, i) for i in range(4)))
        if rews:
            outs += tuple(stack(rews, i) for i in range(3))
        return (answers, key), outs

    (answers, _), outs = jax.lax.scan(body, (answers, key), jnp.arange(MAX_HOPS))
    outs = [jnp.moveaxis(o, 0, 1) for o in outs]
    if len(outs) == 5:
        b = plan.shape[0]
        outs += [jnp.zeros((b, MAX_HOPS, 0, REW_PROMPT_LEN), jnp.int32),
                 jnp.zeros((b, MAX_HOPS, 0, QUERY_LEN), jnp.int32),
                 jnp.zeros((b, MAX_HOPS, 0), bool)]  # fmt: skip
    last = jnp.clip(n_steps - 1, 0, MAX_HOPS - 1)
    final = jnp.take_along_axis(answers, last[:, None, None], 1)[:, 0]
    final = jnp.where(n_steps[:, None] > 0, final, NIL)
    q, ap, ad, ao, av, rp, ro, rv = outs
    return Trace(plan_prompt, plan, n_steps, q, ap, ad, ao, av.astype(jnp.float32), rp, ro,
                 rv.astype(jnp.float32), answers, final)  # fmt: skip


def plan_prompts(questions: Array) -> Array:
    """[PLAN, question]: i32[B, PLAN_PROMPT_LEN]."""
    return jnp.concatenate([jnp.full((questions.shape[0], 1), PLAN, jnp.int32), questions], 1)


def run_pipeline(model, agents: Agents, retriever, docs, vocab: Vocab, questions: Array,
                 key: Array, cfg: ExecConfig) -> Trace:  # fmt: skip
    """Plan (sampled at ``cfg.temperature``) then :func:`execute`."""
    k_plan, k_exec = jax.random.split(key)
    prompt = plan_prompts(questions)
    plan = sample(model, agents.plan, prompt, k_plan, PLAN_LEN, cfg.temperature)
    return execute(model, agents, retriever, docs, vocab, prompt, plan, k_exec, cfg)
