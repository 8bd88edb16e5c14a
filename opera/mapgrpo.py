"""MAPGRPO (arXiv 2508.16438; FLOWRL.md §7.2, §8.3): SFT warm start, then GRPO one role at a time.

* Stage ``plan``: sample G plans per question, score with the rule-judged ``r_plan``; at refresh
  points (every ``refresh_every`` updates) the lowest-scoring sample of each group is replaced by
  the gold plan, which enters the group mean/std but is masked out of the loss (no gradient).
* Stage ``analysis`` (plan frozen): run the pipeline greedily, pick one analysis call per
  question, sample G judgements, ``r_ana = 0.65 EM + 0.25 sufficiency + 0.10 format``.
* Stage ``rewrite`` (plan and analysis frozen): pick one step query per question, sample G
  rewrites, ``r_rew = w1 sqrt(NDCG@k) + w2 format``.
* Baseline ``single``: one LM plays all three roles, end-to-end GRPO on the final answer's EM,
  the advantage of a trajectory shared by all the tokens it generated.

Each stage's loss is a registry loss (``flowrl.losses.get_loss``, default ``grpo``) with
group-normalised advantages (``flowrl.advantages``, ``grpo``) and a k3 KL to the role's SFT
policy (``kl_coef``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import optax

from flowrl.advantages import compute_advantages, outcome_to_token_rewards
from flowrl.losses import get_loss
from flowrl.types import AdvantageInputs, LossConfig, LossInputs
from opera import agents as ag
from opera import rewards as rw
from opera.world import MAX_HOPS, PLAN_LEN, Vocab

Array = jax.Array


@flax.struct.dataclass
class OperaState:
    """Training state. ``params``/``opt``/``ref``: :class:`opera.agents.Agents` of LM params,
    optax states and the frozen SFT reference (the single-agent baseline holds its one tree in
    every slot and its optimizer state in ``opt.plan``); ``step``: i32 updates done."""

    params: Any
    opt: Any
    ref: Any
    key: Array
    step: Array


class Env(NamedTuple):
    """Static pieces every update closes over."""

    model: Any
    retriever: Any
    vocab: Vocab
    kb: rw.KB
    questions: Array  # i32[N, QUESTION_LEN] training questions
    gold_plans: Array  # i32[N, PLAN_LEN]
    answers: Array  # i32[N] gold answer entity
    exec_cfg: ag.ExecConfig


class RLConfig(NamedTuple):
    """Plain RL hyperparameters (the experiment config's ``rl`` section)."""

    loss: str
    loss_config: LossConfig
    prompts_per_step: int
    group_size: int
    temperature: float
    refresh_every: int
    gold_injection: bool
    w_ndcg: float
    w_format: float


def group_policy_loss(logp, old_logp, ref_logp, mask, scores, group_ids, exclude, rl: RLConfig):
    """GRPO loss of a batch of groups with excluded rows (gold injection).

    logp/old_logp/ref_logp/mask f32[B, T]; scores f32[B]; group_ids i32[B]; exclude bool[B].
    Every row enters its group's mean/std (the advantage), only rows with ``exclude == 0``
    enter the loss, so an injected gold sample receives exactly zero gradient.
    """
    adv = compute_advantages(
        "grpo", AdvantageInputs(outcome_to_token_rewards(scores, mask), mask, group_ids)
    ).advantages
    keep = mask * (1.0 - exclude.astype(jnp.float32))[:, None]
    inputs = LossInputs(logp, keep, jax.lax.stop_gradient(adv), old_logp, ref_logp)
    return get_loss(rl.loss)(inputs, rl.loss_config)


def _apply(opt: optax.GradientTransformation, params, opt_state, grads):
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


class Rollout(NamedTuple):
    """One role's group batch: prompts i32[B, P], responses i32[B, n], mask f32[B, n],
    scores f32[B], exclude bool[B]."""

    prompts: Array
    responses: Array
    mask: Array
    scores: Array
    exclude: Array


def _role_update(env: Env, rl: RLConfig, opt, params, opt_state, ref, ro: Rollout):
    """One GRPO step of one role's LM on a :class:`Rollout`."""
    g = rl.group_size
    gid = jnp.arange(ro.scores.shape[0]) // g
    old = jax.lax.stop_gradient(ag.response_logprobs(env.model, params, ro.prompts, ro.responses))
    ref_lp = ag.response_logprobs(env.model, ref, ro.prompts, ro.responses)

    def loss_fn(p):
        lp = ag.response_logprobs(env.model, p, ro.prompts, ro.responses)
        return group_policy_loss(lp, old, ref_lp, ro.mask, ro.scores, gid, ro.exclude, rl)

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    params, opt_state = _apply(opt, params, opt_state, grads)
    return params, opt_state, {**metrics, "reward": ro.scores.mean(), "loss": loss}


def _batch(env: Env, rl: RLConfig, key: Array) -> Array:
    return jax.random.randint(key, (rl.prompts_per_step,), 0, env.questions.shape[0])


def inject_gold(scores: Array, samples: Array, gold: Array, gold_score: Array, g: int, on):
    """Replace each group's argmin-score sample by the gold one when ``on``.

    scores f32[B]; samples/gold i32[B, n] (gold repeated per row); gold_score f32[B]; B = P * g.
    Returns (samples, scores, injected bool[B])."""
    worst = jnp.argmin(scores.reshape(-1, g), axis=1)
    injected = (jnp.arange(g)[None] == worst[:, None]).reshape(-1) & on
    samples = jnp.where(injected[:, None], gold, samples)
    return samples, jnp.where(injected, gold_score, scores), injected


def plan_rollout(env: Env, rl: RLConfig, params: ag.Agents, key: Array, step: Array) -> Rollout:
    """Stage 1 rollout: G plans per question, r_plan, gold injection at refresh points."""
    k_q, k_s = jax.random.split(key)
    idx = jnp.repeat(_batch(env, rl, k_q), rl.group_size)
    prompts = ag.plan_prompts(env.questions[idx])
    plans = ag.sample(env.model, params.plan, prompts, k_s, PLAN_LEN, rl.temperature)
    gold, answer = env.gold_plans[idx], env.answers[idx]
    scores = rw.plan_reward(env.vocab, env.kb, plans, gold, answer)
    on = rl.gold_injection & (step % rl.refresh_every == 0)
    gold_score = rw.plan_reward(env.vocab, env.kb, gold, gold, answer)
    plans, scores, injected = inject_gold(scores, plans, gold, gold_score, rl.group_size, on)
    return Rollout(prompts, plans, ag.plan_mask(plans), scores, injected)


def _pick(key: Array, valid: Array) -> tuple[Array, Array]:
    """A random valid index per row of valid f32[B, K] (index 0 and ok=False if none)."""
    logits = jnp.where(valid > 0, 0.0, -jnp.inf)
    ok = jnp.any(valid > 0, -1)
    idx = jax.random.categorical(key, jnp.where(ok[:, None], logits, 0.0), axis=-1)
    return jnp.where(ok, idx, 0), ok


def _greedy_trace(env: Env, rl: RLConfig, params, key: Array) -> ag.Trace:
    k_q, k_run = jax.random.split(key)
    q = env.questions[_batch(env, rl, k_q)]
    cfg = env.exec_cfg._replace(temperature=0.0)
    return ag.run_pipeline(env.model, params, env.retriever, env.kb.docs, env.vocab, q, k_run, cfg)


def analysis_rollout(env: Env, rl: RLConfig, params: ag.Agents, key: Array, step) -> Rollout:
    """Stage 2 rollout: one analysis call per question from a greedy pipeline, G judgements."""
    del step
    k_t, k_p, k_s = jax.random.split(key, 3)
    tr = _greedy_trace(env, rl, params, k_t)
    p = tr.ana_prompt.shape[0]
    idx, ok = _pick(k_p, tr.ana_valid.reshape(p, -1))
    prompt = tr.ana_prompt.reshape(p, -1, tr.ana_prompt.shape[-1])[jnp.arange(p), idx]
    docs = tr.ana_docs.reshape(p, -1, tr.ana_docs.shape[-1])[jnp.arange(p), idx]
    g = rl.group_size
    prompt, docs, ok = (jnp.repeat(x, g, axis=0) for x in (prompt, docs, ok))
    out = ag.sample(env.model, params.analysis, prompt, k_s, ag.ANSWER_LEN, rl.temperature)
    query = prompt[:, 1 : 1 + ag.QUERY_LEN]
    scores = rw.analysis_reward(env.vocab, env.kb, query, docs, out)
    return Rollout(prompt, out, jnp.ones(out.shape, jnp.float32), scores, ~ok)


def rewrite_rollout(env: Env, rl: RLConfig, params: ag.Agents, key: Array, step) -> Rollout:
    """Stage 3 rollout: one executed step query per question, G rewrites, sqrt-NDCG reward."""
    del step
    k_t, k_p, k_s = jax.random.split(key, 3)
    tr = _greedy_trace(env, rl, params, k_t)
    p = tr.step_query.shape[0]
    valid = (jnp.arange(MAX_HOPS)[None] < tr.n_steps[:, None]).astype(jnp.float32)
    idx, ok = _pick(k_p, valid)
    query = jnp.repeat(tr.step_query[jnp.arange(p), idx], rl.group_size, axis=0)
    ok = jnp.repeat(ok, rl.group_size)
    prompt = jnp.concatenate([jnp.full((query.shape[0], 1), ag.REW, jnp.int32), query], 1)
    out = ag.sample(env.model, params.rewrite, prompt, k_s, ag.QUERY_LEN, rl.temperature)
    k = env.exec_cfg.top_k
    scores = rw.rewrite_reward(env.vocab, env.kb, env.retriever, query, out, k, rl.w_ndcg,
                               rl.w_format)  # fmt: skip
    return Rollout(prompt, out, jnp.ones(out.shape, jnp.float32), scores, ~ok)


ROLLOUTS: dict[str, Callable] = {
    "plan": plan_rollout,
    "analysis": analysis_rollout,
    "rewrite": rewrite_rollout,
}


def make_role_update(env: Env, rl: RLConfig, opt, role: str):
    """Jitted ``state -> (state, metrics)``: one MAPGRPO update of ``role``, others frozen."""
    rollout = ROLLOUTS[role]

    def update(state: OperaState):
        key, sub = jax.random.split(state.key)
        ro = rollout(env, rl, state.params, sub, state.step)
        p, o = getattr(state.params, role), getattr(state.opt, role)
        p, o, metrics = _role_update(env, rl, opt, p, o, getattr(state.ref, role), ro)
        params = state.params._replace(**{role: p})
        opt_state = state.opt._replace(**{role: o})
        metrics = {f"{role}/{k}": v for k, v in metrics.items()}
        metrics[f"{role}/injected"] = ro.exclude.mean()
        return state.replace(params=params, opt=opt_state, key=key, step=state.step + 1), metrics

    return jax.jit(update)


def _pad_cols(x: Array, n: int) -> Array:
    return jnp.pad(x, ((0, 0), (0, n - x.shape[1])))


def _flat(x: Array) -> Array:
    return x.reshape(-1, x.shape[-1])


def single_segments(env: Env, p, tr: ag.Trace) -> tuple[Array, Array]:
    """(logp f32[S, PLAN_LEN], mask f32[S, PLAN_LEN]) of every segment a trajectory generated:
    rows [plans (B) | analysis calls (B*H*A) | rewrites (B*H*R)], responses right-padded."""
    m = env.model
    lp = [ag.response_logprobs(m, p, tr.plan_prompt, tr.plan)]
    mk = [ag.plan_mask(tr.plan)]
    lp.append(ag.response_logprobs(m, p, _flat(tr.ana_prompt), _flat(tr.ana_out)))
    mk.append(jnp.broadcast_to(tr.ana_valid.reshape(-1, 1), lp[-1].shape))
    if tr.rew_out.shape[2]:
        lp.append(ag.response_logprobs(m, p, _flat(tr.rew_prompt), _flat(tr.rew_out)))
        mk.append(jnp.broadcast_to(tr.rew_valid.reshape(-1, 1), lp[-1].shape))
    cat = lambda xs: jnp.concatenate([_pad_cols(x, PLAN_LEN) for x in xs], 0)  # noqa: E731
    return cat(lp), cat(mk)


def make_single_update(env: Env, rl: RLConfig, opt):
    """Jitted single-agent end-to-end GRPO update (one LM for all roles, reward = final EM)."""
    g = rl.group_size

    def update(state: OperaState):
        key, k_q, k_run = jax.random.split(state.key, 3)
        idx = jnp.repeat(_batch(env, rl, k_q), g)
        cfg = env.exec_cfg._replace(temperature=rl.temperature)
        p = state.params.plan
        tr = ag.run_pipeline(env.model, ag.Agents(p, p, p), env.retriever, env.kb.docs,
                             env.vocab, env.questions[idx], k_run, cfg)  # fmt: skip
        em, f1 = rw.answer_em_f1(tr.final, jnp.stack(env.vocab.name(env.answers[idx]), -1))
        b = idx.shape[0]
        n_ana, n_rew = tr.ana_valid[0].size, tr.rew_valid[0].size
        traj = jnp.arange(b)
        seg_traj = jnp.concatenate([traj, jnp.repeat(traj, n_ana), jnp.repeat(traj, n_rew)])
        adv_in = AdvantageInputs(em[:, None], jnp.ones((b, 1)), traj // g)
        adv = compute_advantages("grpo", adv_in).advantages[:, 0]
        old, mask = single_segments(env, p, tr)
        old = jax.lax.stop_gradient(old)
        ref, _ = single_segments(env, state.ref.plan, tr)
        adv_tok = adv[seg_traj][:, None] * mask

        def loss_fn(q):
            lp, _ = single_segments(env, q, tr)
            return get_loss(rl.loss)(LossInputs(lp, mask, adv_tok, old, ref), rl.loss_config)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
        p, o = _apply(opt, p, state.opt.plan, grads)
        metrics = {f"single/{k}": v for k, v in {**metrics, "reward": em.mean(),
                                                 "f1": f1.mean()}.items()}  # fmt: skip
        new = state.replace(params=ag.Agents(p, p, p), opt=state.opt._replace(plan=o), key=key,
                            step=state.step + 1)  # fmt: skip
        return new, metrics

    return jax.jit(update)
