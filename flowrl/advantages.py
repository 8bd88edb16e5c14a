"""Advantage estimators, registered by name (FLOWRL.md §1.2, §2.4; verl ``compute_*_advantage``).

Every estimator has the signature ``(AdvantageInputs, AdvantageConfig) -> AdvantageOutputs`` and
returns per-token advantages f32[B, T] that are zero on masked tokens. Outcome estimators (grpo,
dr_grpo, rloo) use the per-sequence score ``s_b = sum_t token_rewards[b, t] * mask[b, t]`` and the
prompt groups ``group_ids`` i32[B] (values in [0, B); groups need not be contiguous or equal-sized).

Usage::

    adv = compute_advantages("grpo", AdvantageInputs(token_rewards, mask, group_ids), cfg)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowrl.aggregation import masked_whiten
from flowrl.types import (
    AdvantageConfig,
    AdvantageEstimator,
    AdvantageInputs,
    AdvantageName,
    AdvantageOutputs,
    Array,
    Registry,
)

_REGISTRY: Registry[AdvantageName, AdvantageEstimator] = Registry(
    "advantage estimator", AdvantageName
)


def register_advantage(name: AdvantageName | str):
    """Decorator adding an estimator under ``name`` (a member of :class:`AdvantageName`)."""
    return _REGISTRY.register(name)


def get_advantage(name: AdvantageName | str) -> AdvantageEstimator:
    """The registered estimator; unknown names raise ValueError listing the registered ones."""
    return _REGISTRY.get(name)


def advantage_names() -> list[str]:
    return list(_REGISTRY)


def compute_advantages(
    name: AdvantageName | str, inputs: AdvantageInputs, config: AdvantageConfig | None = None
) -> AdvantageOutputs:
    """Look up ``name`` and apply it (``config`` defaults to ``AdvantageConfig()``)."""
    return get_advantage(name)(inputs, AdvantageConfig() if config is None else config)


def outcome_to_token_rewards(scores: Array, mask: Array) -> Array:
    """Place per-sequence scores f32[B] on the last response token: f32[B, T]."""
    t = jnp.arange(mask.shape[-1])
    last = jnp.max(jnp.where(mask > 0, t, -1), axis=-1)  # -1 for empty rows: no token gets it
    return jnp.where(t[None, :] == last[:, None], scores[:, None], 0.0).astype(jnp.float32)


def group_stats(
    scores: Array, group_ids: Array, valid: Array, unbiased: bool
) -> tuple[Array, Array, Array]:
    """Per-sequence statistics of each sequence's group, f32[B] each: (count, mean, std).

    Padding rows (``valid == 0``) are excluded. Following verl, a group of size 1 gets mean 0 and
    std 1 (FLOWRL.md §1.2), so its advantage is its raw score.
    """
    n = scores.shape[0]
    count_g = jax.ops.segment_sum(valid, group_ids, num_segments=n)
    sum_g = jax.ops.segment_sum(valid * scores, group_ids, num_segments=n)
    mean_g = sum_g / jnp.maximum(count_g, 1.0)
    count, mean = count_g[group_ids], mean_g[group_ids]
    sq_g = jax.ops.segment_sum(valid * jnp.square(scores - mean), group_ids, num_segments=n)
    divisor = count_g - 1.0 if unbiased else count_g
    std = jnp.sqrt(sq_g / jnp.maximum(divisor, 1.0))[group_ids]
    single = count <= 1.0
    return count, jnp.where(single, 0.0, mean), jnp.where(single, 1.0, std)


def _outcome_setup(inputs: AdvantageInputs) -> tuple[Array, Array, Array]:
    if inputs.group_ids is None:
        raise ValueError("AdvantageInputs.group_ids is required by group-based estimators")
    valid = _valid(inputs)
    scores = jnp.sum(inputs.token_rewards * inputs.mask, axis=-1)
    return scores, inputs.group_ids.astype(jnp.int32), valid


def _valid(inputs: AdvantageInputs) -> Array:
    b = inputs.mask.shape[0]
    if inputs.seq_valid is None:
        return jnp.ones((b,), jnp.float32)
    return inputs.seq_valid.astype(jnp.float32)


def _broadcast(adv: Array, inputs: AdvantageInputs, valid: Array) -> AdvantageOutputs:
    tok = adv[:, None] * inputs.mask * valid[:, None]
    return AdvantageOutputs(tok, tok)


@register_advantage(AdvantageName.GRPO)
def grpo_advantage(inputs: AdvantageInputs, config: AdvantageConfig) -> AdvantageOutputs:
    """GRPO group z-score, A_i = (s_i - mean_G s) / (std_G s + eps) (DeepSeekMath outcome
    supervision; verl ``compute_grpo_outcome_advantage``). ``config.unbiased_std`` picks the N-1
    (verl, default) or N divisor."""
    scores, gid, valid = _outcome_setup(inputs)
    _, mean, std = group_stats(scores, gid, valid, config.unbiased_std)
    return _broadcast((scores - mean) / (std + config.eps), inputs, valid)


@register_advantage(AdvantageName.DR_GRPO)
def dr_grpo_advantage(inputs: AdvantageInputs, config: AdvantageConfig) -> AdvantageOutputs:
    """Dr.GRPO (arXiv 2503.20783): A_i = s_i - mean_G s, no std normalisation."""
    scores, gid, valid = _outcome_setup(inputs)
    _, mean, _ = group_stats(scores, gid, valid, config.unbiased_std)
    return _broadcast(scores - mean, inputs, valid)


@register_advantage(AdvantageName.RLOO)
def rloo_advantage(inputs: AdvantageInputs, config: AdvantageConfig) -> AdvantageOutputs:
    """RLOO leave-one-out baseline: A_i = s_i - mean_{j != i} s_j = G/(G-1) (s_i - mean_G s);
    a group of size 1 keeps its raw score (verl ``compute_rloo_outcome_advantage``)."""
    scores, gid, valid = _outcome_setup(inputs)
    count, mean, _ = group_stats(scores, gid, valid, config.unbiased_std)
    scale = count / jnp.maximum(count - 1.0, 1.0)
    return _broadcast(jnp.where(count > 1.0, scale * (scores - mean), scores), inputs, valid)


def discounted_returns(token_rewards: Array, mask: Array, gamma: float) -> Array:
    """G_t = sum_{t' >= t} gamma^(t'-t) r_t' m_t' as a reverse scan over time, f32[B, T]."""

    def step(carry, xs):
        r, m = xs
        g = r * m + gamma * carry
        return g, g

    _, ret = jax.lax.scan(step, jnp.zeros(mask.shape[0]), (token_rewards.T, mask.T), reverse=True)
    return ret.T * mask


@register_advantage(AdvantageName.REINFORCE_PLUS_PLUS)
def reinforce_plus_plus_advantage(
    inputs: AdvantageInputs, config: AdvantageConfig
) -> AdvantageOutputs:
    """REINFORCE++ (arXiv 2501.03262; verl ``compute_reinforce_plus_plus_outcome_advantage``):
    discounted returns (KL penalty, if any, already folded into ``token_rewards``), whitened over
    all response tokens of the batch. Returns the un-whitened returns as value targets."""
    valid = _valid(inputs)
    mask = inputs.mask * valid[:, None]
    returns = discounted_returns(inputs.token_rewards, mask, config.gamma)
    return AdvantageOutputs(masked_whiten(returns, mask), returns)


@register_advantage(AdvantageName.GAE)
def gae_advantage(inputs: AdvantageInputs, config: AdvantageConfig) -> AdvantageOutputs:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) for PPO with a value head:
    delta_t = r_t + gamma V_{t+1} - V_t, A_t = delta_t + gamma lam A_{t+1}, with V = 0 after the
    last response token (right-padded responses). Returns are A + V (before whitening)."""
    if inputs.values is None:
        raise ValueError("AdvantageInputs.values is required by the 'gae' estimator")
    valid = _valid(inputs)
    mask = inputs.mask * valid[:, None]
    values = inputs.values * mask
    next_values = jnp.concatenate([values[:, 1:], jnp.zeros_like(values[:, :1])], axis=1)
    deltas = inputs.token_rewards * mask + config.gamma * next_values - values

    def step(carry, xs):
        d, m = xs
        a = (d + config.gamma * config.lam * carry) * m
        return a, a

    _, adv = jax.lax.scan(step, jnp.zeros(mask.shape[0]), (deltas.T, mask.T), reverse=True)
    adv = adv.T
    returns = (adv + values) * mask
    if config.whiten_gae:
        adv = masked_whiten(adv, mask)
    return AdvantageOutputs(adv * mask, returns)
