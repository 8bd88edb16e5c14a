"""Evaluation metrics from n samples per prompt: unbiased pass@k and maj@k (FLOWRL.md §8.1).

Both are U-statistics: the average, over all k-subsets of the n samples, of "some sample is
correct" (pass@k, Chen et al. 2021, eq. 1) or "the subset's majority answer is correct" (maj@k),
so each is an unbiased estimate of the metric for k i.i.d. samples.
"""

from __future__ import annotations

import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np

from flowrl.rewards import majority_vote
from flowrl.types import Array


def pass_at_k(num_samples: int, num_correct: Array, k: int) -> Array:
    """Unbiased pass@k = 1 - C(n - c, k) / C(n, k) (Chen et al. 2021, eq. 1).

    Computed as 1 - prod_{i = n-c+1}^{n} (1 - k / i), which is stable for large n and equals 1
    whenever n - c < k (one factor is then exactly 0).

    Args:
      num_samples: n, samples per prompt (Python int).
      num_correct: i32[...] c per prompt, in [0, n].
      k: 1 <= k <= n.

    Returns:
      f32[...] pass@k per prompt.
    """
    if not 1 <= k <= num_samples:
        raise ValueError(f"k={k} must lie in [1, num_samples={num_samples}]")
    i = jnp.arange(1, num_samples + 1, dtype=jnp.float32)
    c = jnp.asarray(num_correct)[..., None]
    factors = jnp.where(i > num_samples - c, 1.0 - k / i, 1.0)
    return 1.0 - jnp.prod(factors, axis=-1)


def pass_at_k_from_correct(correct: Array, k: int) -> Array:
    """pass@k per prompt f32[P] from a correctness table bool[P, n]."""
    return pass_at_k(correct.shape[-1], jnp.sum(correct.astype(jnp.int32), axis=-1), k)


def maj_at_k(
    answers: Array,
    ground_truth: Array,
    k: int,
    valid: Array | None = None,
    key: Array | None = None,
    num_draws: int = 256,
    max_subsets: int = 20_000,
) -> Array:
    """maj@k per prompt: the probability that the majority answer of k samples is correct.

    With ``key=None`` this is exact: the average over all C(n, k) subsets (enumerated as a static
    index table, so C(n, k) <= ``max_subsets`` is required). With a key, ``num_draws`` random
    k-subsets (shared across prompts) give an unbiased Monte Carlo estimate. Within a subset, ties
    go to the answer seen first in sample order (:func:`flowrl.rewards.majority_vote`).

    Args:
      answers: i32[P, n] answer ids; ground_truth: i32[P]; valid: bool[P, n] or None.
      k: 1 <= k <= n.

    Returns:
      f32[P].
    """
    n = answers.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k={k} must lie in [1, n={n}]")
    valid = jnp.ones(answers.shape, bool) if valid is None else valid.astype(bool)
    if key is None:
        if math.comb(n, k) > max_subsets:
            raise ValueError(
                f"C(n={n}, k={k}) = {math.comb(n, k)} subsets exceed max_subsets={max_subsets}; "
                "pass a key for the Monte Carlo estimate"
            )
        subsets = jnp.asarray(np.array(list(itertools.combinations(range(n), k)), np.int32))
    else:
        subsets = _random_subsets(key, n, k, num_draws)
    return _maj_over_subsets(answers, valid, ground_truth, subsets)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _random_subsets(key: Array, n: int, k: int, num_draws: int) -> Array:
    # The first k of a uniformly random permutation form a uniformly random k-subset.
    perm = jnp.argsort(jax.random.uniform(key, (num_draws, n)), axis=-1)
    return jnp.sort(perm[:, :k], axis=-1)


@jax.jit
def _maj_over_subsets(answers: Array, valid: Array, truth: Array, subsets: Array) -> Array:
    label, _, _ = majority_vote(answers[:, subsets], valid[:, subsets])  # [P, S]
    return jnp.mean((label == truth[:, None]).astype(jnp.float32), axis=-1)
