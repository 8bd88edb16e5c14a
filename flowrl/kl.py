"""Per-token KL estimators between the policy and the reference (FLOWRL.md §1.3).

With d = log pi_ref - log pi_theta (tokens sampled from pi_theta), Schulman's estimators of
KL(pi_theta || pi_ref) are (http://joschu.net/blog/kl-approx.html; verl ``kl_penalty``):

- k1 (verl "kl"):          -d = log pi_theta - log pi_ref            (unbiased, high variance)
- k2 (verl "mse"):         d^2 / 2                                   (biased, low variance)
- k3 (verl "low_var_kl"):  exp(d) - d - 1, clamped to [-10, 10]      (unbiased, >= 0)

They serve either as a loss term (GRPO, :func:`kl_loss`) or as a reward penalty
(:func:`apply_kl_penalty`, PPO-style ``r_t - coef * kl_t``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from flowrl.aggregation import agg_loss
from flowrl.types import AggMode, Array, KLName, check_name

K3_CLAMP = 10.0  # verl clamps low_var_kl to [-10, 10] to bound the loss on outlier tokens


def _k1(logp: Array, ref_logp: Array) -> Array:
    return logp - ref_logp


def _k2(logp: Array, ref_logp: Array) -> Array:
    return 0.5 * jnp.square(logp - ref_logp)


def _k3(logp: Array, ref_logp: Array) -> Array:
    d = ref_logp - logp
    # expm1(d) - d is exp(d) - d - 1 without cancellation near d = 0, so k3 >= 0 holds in float.
    return jnp.clip(jnp.expm1(d) - d, -K3_CLAMP, K3_CLAMP)


_KL = {KLName.K1.value: _k1, KLName.K2.value: _k2, KLName.K3.value: _k3}


def kl_estimate(logp: Array, ref_logp: Array, kind: KLName | str = KLName.K3) -> Array:
    """Per-token KL estimate f32[B, T] of KL(pi_theta || pi_ref) from log-probs f32[B, T].

    Args:
      logp: log pi_theta of the sampled tokens (gradient flows through it).
      ref_logp: log pi_ref of the same tokens.
      kind: ``"k1"``, ``"k2"`` or ``"k3"``.
    """
    kind = check_name(KLName, kind, "kl_type")
    return _KL[kind](logp, ref_logp)


def kl_loss(
    logp: Array,
    ref_logp: Array,
    mask: Array,
    kind: KLName | str = KLName.K3,
    agg_mode: AggMode | str = AggMode.TOKEN_MEAN,
    max_len: int | None = None,
) -> Array:
    """KL loss term ``agg_loss(kl_estimate(logp, ref_logp), mask, agg_mode)``, f32[]."""
    return agg_loss(kl_estimate(logp, ref_logp, kind), mask, agg_mode, max_len)


def apply_kl_penalty(
    token_rewards: Array,
    logp: Array,
    ref_logp: Array,
    mask: Array,
    coef: float,
    kind: KLName | str = KLName.K1,
) -> tuple[Array, Array]:
    """KL as a reward penalty: ``r_t - coef * sg(kl_t)`` on response tokens.

    Args:
      token_rewards, logp, ref_logp, mask: f32[B, T].
      coef: penalty coefficient (>= 0).
      kind: KL estimator.

    Returns:
      (penalised rewards f32[B, T], mean per-sequence KL f32[] for logging).
    """
    kl = jax.lax.stop_gradient(kl_estimate(logp, ref_logp, kind)) * mask
    seq_kl = jnp.sum(kl, axis=-1)
    return token_rewards - coef * kl, jnp.mean(seq_kl)
