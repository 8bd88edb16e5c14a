"""DAPO dynamic sampling with refill (arXiv 2503.14476 §3.2; FLOWRL.md §2.3, §6.3).

Groups whose G rewards are all equal (all right or all wrong) have zero GRPO advantage and give no
gradient. Dynamic sampling drops them and keeps generating batches until ``target_groups``
qualified groups are collected or ``max_num_gen_batches`` batches were drawn, then truncates.
Everything has static shapes: :func:`dynamic_sample` is a ``lax.while_loop`` that scatters the
kept groups into a fixed buffer, so the whole refill loop runs under ``jit``. Unfilled slots are
flagged by ``valid == False``; give them a zero mask (``AdvantageInputs.seq_valid`` and the loss
mask) so they contribute nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from flowrl.types import Array


def group_keep_mask(
    scores: Array, min_accuracy: float | None = None, max_accuracy: float | None = None
) -> Array:
    """Which groups qualify, bool[P].

    A group qualifies when its rewards are not all equal (DAPO ``filter_groups``, metric
    ``acc``) and, if bounds are given, its mean reward lies in [min_accuracy, max_accuracy]
    (SimpleVLA-RL's ``filter_accuracy`` with [0.1, 0.9]).

    Args:
      scores: f32[P, G] per-sample rewards (or accuracies) of each group.
    """
    keep = jnp.max(scores, axis=-1) > jnp.min(scores, axis=-1)
    acc = jnp.mean(scores, axis=-1)
    if min_accuracy is not None:
        keep = keep & (acc >= min_accuracy)
    if max_accuracy is not None:
        keep = keep & (acc <= max_accuracy)
    return keep


class DynamicSampleResult(NamedTuple):
    """Output of :func:`dynamic_sample`.

    Attributes:
      batch: the caller's pytree, each leaf [target_groups, ...] (first qualified groups in order).
      scores: f32[target_groups, G].
      valid: bool[target_groups], False for slots left empty after ``max_num_gen_batches``.
      num_batches: i32[] batches generated.
      num_qualified: i32[] qualified groups seen in total (may exceed target_groups).
    """

    batch: Any
    scores: Array
    valid: Array
    num_batches: Array
    num_qualified: Array


def dynamic_sample(
    generate: Callable[[Array], tuple[Any, Array]],
    key: Array,
    target_groups: int,
    max_num_gen_batches: int,
    min_accuracy: float | None = None,
    max_accuracy: float | None = None,
) -> DynamicSampleResult:
    """Generate batches until ``target_groups`` qualified groups exist, then truncate.

    Args:
      generate: jittable ``key -> (batch pytree with leaves [P, ...], scores f32[P, G])``, one
        generation batch of P prompt groups (DAPO: P = 3 x train batch).
      key: PRNG key.
      target_groups: qualified groups wanted (the train batch size in prompts).
      max_num_gen_batches: upper bound on generated batches (DAPO: 10).
      min_accuracy, max_accuracy: optional accuracy bounds, see :func:`group_keep_mask`.

    Returns:
      :class:`DynamicSampleResult`.
    """
    if target_groups < 1:
        raise ValueError(f"target_groups={target_groups} must be >= 1")
    if max_num_gen_batches < 1:
        raise ValueError(f"max_num_gen_batches={max_num_gen_batches} must be >= 1")
    shapes = jax.eval_shape(generate, key)
    buffer = jax.tree.map(lambda s: jnp.zeros((target_groups, *s.shape[1:]), s.dtype), shapes)

    def cond(carry):
        _, _, filled, rounds, _ = carry
        return (filled < target_groups) & (rounds < max_num_gen_batches)

    def body(carry):
        key, buf, filled, rounds, seen = carry
        key, key_gen = jax.random.split(key)
        out = generate(key_gen)
        keep = group_keep_mask(out[1], min_accuracy, max_accuracy)
        slot = filled + jnp.cumsum(keep) - 1
        # Rejected groups and overflow beyond target_groups go to an out-of-range slot: dropped.
        slot = jnp.where(keep, slot, target_groups)
        buf = jax.tree.map(lambda b, x: b.at[slot].set(x, mode="drop"), buf, out)
        n_keep = jnp.sum(keep, dtype=jnp.int32)
        return key, buf, jnp.minimum(filled + n_keep, target_groups), rounds + 1, seen + n_keep

    zero = jnp.zeros((), jnp.int32)
    _, buf, filled, rounds, seen = jax.lax.while_loop(cond, body, (key, buffer, zero, zero, zero))
    batch, scores = buf
    valid = jnp.arange(target_groups) < filled
    return DynamicSampleResult(batch, scores, valid, rounds, seen)
