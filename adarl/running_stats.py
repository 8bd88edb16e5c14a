"""The one running mean/variance normaliser of adarl (SAC/AdaRL observations, PPO observations
and PPO's reward scaling).

Statistics merge whole batches with Chan, Golub and LeVeque's parallel update ("Updating formulae
and a pairwise algorithm for computing sample variances", 1979, Eq. 2.1). The rule (one for every
caller): ``std = sqrt(max(m2 / count, 1e-6))`` (population variance floored at 1e-6), and
:func:`normalize` returns ``clip((x - mean) / std, ±10)`` once more than one sample was seen, the
input (clipped) before that.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

VAR_FLOOR = 1e-6
CLIP = 10.0


class RunningStats(NamedTuple):
    """mean: f32 (...,); m2: f32 (...,) sum of squared deviations; count: f32 () samples seen."""

    mean: jax.Array
    m2: jax.Array
    count: jax.Array


def init(shape: tuple[int, ...]) -> RunningStats:
    """Empty statistics over values of ``shape``."""
    return RunningStats(
        jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32), jnp.zeros((), jnp.float32)
    )


def update(stats: RunningStats, batch: jax.Array) -> RunningStats:
    """Merges ``batch`` f32 (B, ...) into ``stats`` (Chan et al. 1979, Eq. 2.1)."""
    n = jnp.asarray(batch.shape[0], jnp.float32)
    mean_b = jnp.mean(batch, axis=0)
    m2_b = jnp.sum((batch - mean_b) ** 2, axis=0)
    total = stats.count + n
    delta = mean_b - stats.mean
    mean = stats.mean + delta * n / total
    m2 = stats.m2 + m2_b + delta**2 * stats.count * n / total
    return RunningStats(mean, m2, total)


def std(stats: RunningStats) -> jax.Array:
    """``sqrt(max(m2 / max(count, 1), 1e-6))``, f32 like ``stats.mean``."""
    var = stats.m2 / jnp.maximum(stats.count, 1.0)
    return jnp.sqrt(jnp.maximum(var, VAR_FLOOR))


def normalize(stats: RunningStats, x: jax.Array, clip: float = CLIP) -> jax.Array:
    """``clip((x - mean) / std, ±clip)``; ``clip(x)`` until more than one sample was seen."""
    out = jnp.where(stats.count > 1, (x - stats.mean) / std(stats), x)
    return jnp.clip(out, -clip, clip)
