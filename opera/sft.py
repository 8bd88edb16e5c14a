"""Supervised warm start of the three roles on gold traces (FLOWRL.md §8.1 "Warm start").

Gold traces come from the world: plan = the gold plan; analysis = for every hop of a training
question, the alias/canonical sub-query with its retrieved documents and the
:func:`opera.rewards.analysis_targets` label; rewrite = the sub-query mapped to its canonical
form. The loss is the registry's ``sft`` (token-mean NLL).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowrl.losses import get_loss
from flowrl.types import LossConfig, LossInputs
from opera import agents as ag
from opera import retrieval
from opera import rewards as rw
from opera.world import REW, World

Array = jax.Array


class Demos(NamedTuple):
    """prompts i32[N, P], responses i32[N, n], mask f32[N, n]."""

    prompts: Array
    responses: Array
    mask: Array


class RoleDemos(NamedTuple):
    plan: Demos
    analysis: Demos
    rewrite: Demos


def _sub_queries(world: World) -> tuple[np.ndarray, np.ndarray]:
    """(surface queries, canonical queries) i32[M, 3] of every hop of every training question."""
    qs, v = world.train, world.vocab
    hop, step = np.nonzero(qs.rels >= 0)
    a, b = v.name(qs.chain[hop, step])
    surface = np.stack([qs.surface[hop, step], a, b], 1)
    canon = np.stack([v.rel0 + qs.rels[hop, step], a, b], 1)
    return surface.astype(np.int32), canon.astype(np.int32)


def make_demos(world: World, retriever: retrieval.Retriever, top_k: int) -> RoleDemos:
    """The gold traces of the training questions (see the module docstring)."""
    qs = world.train
    plan = Demos(ag.plan_prompts(jnp.asarray(qs.tokens)), jnp.asarray(qs.plan),
                 ag.plan_mask(jnp.asarray(qs.plan)))  # fmt: skip
    surface, canon = _sub_queries(world)
    queries = jnp.asarray(np.concatenate([surface, canon]))
    kb = rw.KB.of(world)
    doc_ids = retrieval.top_k(retriever, queries, top_k)
    _, target = rw.analysis_targets(world.vocab, kb, queries, doc_ids)
    ana = Demos(ag.make_ana_prompt(kb.docs, queries, doc_ids), target,
                jnp.ones(target.shape, jnp.float32))  # fmt: skip
    rew_prompt = jnp.concatenate([jnp.full((queries.shape[0], 1), REW, jnp.int32), queries], 1)
    rew_target = jnp.asarray(np.concatenate([canon, canon]))
    rew = Demos(rew_prompt, rew_target, jnp.ones(rew_target.shape, jnp.float32))
    return RoleDemos(plan, ana, rew)


def demo_loss(model, params, demos: Demos, idx: Array) -> Array:
    """Registry ``sft`` loss on the demos ``idx`` (i32[b])."""
    lp = ag.response_logprobs(model, params, demos.prompts[idx], demos.responses[idx])
    mask = demos.mask[idx]
    return get_loss("sft")(LossInputs(lp, mask, jnp.zeros_like(mask)), LossConfig())[0]


def make_sft_update(model, demos: RoleDemos, opt, batch_size: int, n_steps: int, shared: bool):
    """Jitted ``state -> (state, metrics)`` running ``n_steps`` SFT steps on all three roles
    (``shared``: one LM for all roles, the single-agent baseline, optimizer state in
    ``opt.plan``)."""
    roles = ag.Agents._fields

    def losses(params: ag.Agents, key: Array) -> tuple[Array, dict]:
        keys = jax.random.split(key, 3)
        per = {}
        for r, k in zip(roles, keys, strict=True):
            d = getattr(demos, r)
            idx = jax.random.randint(k, (batch_size,), 0, d.prompts.shape[0])
            per[r] = demo_loss(model, getattr(params, r), d, idx)
        return sum(per.values()), per

    def one(carry, _):
        params, opt_state, key = carry
        key, sub = jax.random.split(key)
        if shared:
            p = params.plan
            (_, per), g = jax.value_and_grad(
                lambda q: losses(ag.Agents(q, q, q), sub), has_aux=True)(p)  # fmt: skip
            u, o = opt.update(g, opt_state.plan, p)
            p = optax.apply_updates(p, u)
            params, opt_state = ag.Agents(p, p, p), opt_state._replace(plan=o)
        else:
            (_, per), g = jax.value_and_grad(lambda q: losses(q, sub), has_aux=True)(params)
            new = [opt.update(getattr(g, r), getattr(opt_state, r), getattr(params, r))
                   for r in roles]  # fmt: skip
            params = ag.Agents(*(optax.apply_updates(getattr(params, r), u)
                                 for r, (u, _) in zip(roles, new, strict=True)))  # fmt: skip
            opt_state = ag.Agents(*(o for _, o in new))
        return (params, opt_state, key), per

    def update(state):
        (params, opt_state, key), per = jax.lax.scan(
            one, (state.params, state.opt, state.key), None, n_steps
        )
        metrics = {f"sft/{r}_nll": v[-1] for r, v in per.items()}
        return state.replace(params=params, opt=opt_state, key=key,
                             step=state.step + 1), metrics  # fmt: skip

    return jax.jit(update)
