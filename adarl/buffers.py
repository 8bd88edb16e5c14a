"""Uniform replay held on device as a ring buffer (pure functions over :class:`ReplayState`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from adarl.types import ReplayState, Transition


def init(capacity: int, example: Transition) -> ReplayState:
    """Empty buffer of ``capacity`` transitions shaped like ``example`` (one transition)."""
    if capacity < 1:
        raise ValueError(f"capacity={capacity} must be >= 1")
    data = jax.tree.map(
        lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.asarray(x).dtype), example
    )
    return ReplayState(data, jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32))


def capacity(state: ReplayState) -> int:
    return jax.tree.leaves(state.data)[0].shape[0]


def insert(state: ReplayState, batch: Transition) -> ReplayState:
    """Writes ``batch`` (leading axis n <= capacity) at the ring position, overwriting the oldest."""
    cap = capacity(state)
    n = jax.tree.leaves(batch)[0].shape[0]
    if n > cap:
        raise ValueError(f"batch of {n} transitions exceeds replay capacity {cap}")
    idx = (state.insert_pos + jnp.arange(n)) % cap
    data = jax.tree.map(lambda d, x: d.at[idx].set(x), state.data, batch)
    return ReplayState(data, (state.insert_pos + n) % cap, jnp.minimum(state.size + n, cap))


def sample(state: ReplayState, key: jax.Array, batch_size: int) -> Transition:
    """``batch_size`` transitions drawn uniformly with replacement from the valid entries."""
    idx = jax.random.randint(key, (batch_size,), 0, jnp.maximum(state.size, 1))
    return jax.tree.map(lambda d: d[idx], state.data)
