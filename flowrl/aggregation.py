"""Masked reductions; every token/sequence reduction of the loss family goes through here.

FLOWRL.md §1.1 and §1.4 (verl ``core_algos.agg_loss``). Shapes: ``x``, ``mask`` f32[B, T].
Empty rows (sequences with no response token, e.g. padding slots) are left out of every
sequence mean, and an all-empty batch reduces to 0 without NaN (gradients included).
"""

from __future__ import annotations

import jax.numpy as jnp

from flowrl.types import AggMode, Array, check_name


def _safe_div(num: Array, den: Array) -> Array:
    # max(den, 1) keeps the gradient finite when nothing is selected: num is 0 there anyway.
    return num / jnp.maximum(den, 1.0)


def masked_sum(x: Array, mask: Array, axis=None) -> Array:
    """sum(x * mask) over ``axis``."""
    return jnp.sum(x * mask, axis=axis)


def masked_mean(x: Array, mask: Array, axis=None) -> Array:
    """sum(x * mask) / sum(mask) over ``axis``; 0 where the mask is empty."""
    return _safe_div(jnp.sum(x * mask, axis=axis), jnp.sum(mask, axis=axis))


def masked_var(x: Array, mask: Array, unbiased: bool = True) -> Array:
    """Variance of the masked entries of ``x`` (all axes), with the N-1 divisor if ``unbiased``
    (verl ``masked_var``)."""
    mean = masked_mean(x, mask)
    sq = masked_sum((x - mean) ** 2, mask)
    n = jnp.sum(mask)
    return _safe_div(sq, n - 1.0) if unbiased else _safe_div(sq, n)


def masked_whiten(x: Array, mask: Array, eps: float = 1e-8) -> Array:
    """(x - mean) / sqrt(var + eps) over the masked entries (verl ``masked_whiten``), times mask."""
    mean = masked_mean(x, mask)
    var = masked_var(x, mask, unbiased=True)
    return (x - mean) * jnp.reciprocal(jnp.sqrt(var + eps)) * mask


def seq_sum(x: Array, mask: Array) -> Array:
    """f32[B]: sum_t x[b, t] m[b, t], e.g. ``seq_logp = log pi(y | x)``."""
    return masked_sum(x, mask, axis=-1)


def seq_mean(x: Array, mask: Array) -> Array:
    """f32[B]: length-normalised sum_t x m / sum_t m (FlowRL's ``avg_logp``); 0 for empty rows."""
    return masked_mean(x, mask, axis=-1)


def agg_loss(
    loss_mat: Array, mask: Array, mode: AggMode | str, max_len: int | None = None
) -> Array:
    """Reduce a per-token loss f32[B, T] to a scalar (FLOWRL.md §1.4).

    Modes, with m the mask and S = {b : sum_t m[b, t] > 0} the non-empty sequences:

    - ``token-mean`` (DAPO): sum_{b,t} L m / sum_{b,t} m.
    - ``seq-mean-token-mean`` (original GRPO, 1/G sum_i 1/|o_i| sum_t):
      mean_{b in S} [sum_t L m / sum_t m].
    - ``seq-mean-token-sum``: mean_{b in S} [sum_t L m].
    - ``seq-mean-token-sum-norm`` (Dr.GRPO, 1/(G L) sum_i sum_t): mean_{b in S} [sum_t L m] / L
      with the constant L = ``max_len`` (default: the padded length T). Note: verl's code omits
      the 1/|S| and relies on its gradient-accumulation scaling; here it is explicit so that the
      scale matches Dr.GRPO's equation.

    Args:
      loss_mat: f32[B, T] per-token loss.
      mask: f32[B, T] response mask.
      mode: an :class:`AggMode` value.
      max_len: constant divisor for ``seq-mean-token-sum-norm``.

    Returns:
      f32[] loss.
    """
    mode = check_name(AggMode, mode, "agg_mode")
    return _AGG[mode](loss_mat, mask, max_len)


def _token_mean(loss_mat, mask, max_len):
    del max_len
    return masked_mean(loss_mat, mask)


def _seq_mean(per_seq: Array, mask: Array) -> Array:
    nonempty = (jnp.sum(mask, axis=-1) > 0).astype(per_seq.dtype)
    return masked_mean(per_seq, nonempty)


def _seq_mean_token_mean(loss_mat, mask, max_len):
    del max_len
    return _seq_mean(seq_mean(loss_mat, mask), mask)


def _seq_mean_token_sum(loss_mat, mask, max_len):
    del max_len
    return _seq_mean(seq_sum(loss_mat, mask), mask)


def _seq_mean_token_sum_norm(loss_mat, mask, max_len):
    divisor = loss_mat.shape[-1] if max_len is None else max_len
    return _seq_mean(seq_sum(loss_mat, mask), mask) / divisor


_AGG = {
    AggMode.TOKEN_MEAN.value: _token_mean,
    AggMode.SEQ_MEAN_TOKEN_MEAN.value: _seq_mean_token_mean,
    AggMode.SEQ_MEAN_TOKEN_SUM.value: _seq_mean_token_sum,
    AggMode.SEQ_MEAN_TOKEN_SUM_NORM.value: _seq_mean_token_sum_norm,
}
