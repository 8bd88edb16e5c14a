"""Tokenisation of instructions, observations and action chunks (OpenVLA-OFT, FLOWRL.md §6.1).

Vocabulary layout (``V = vocab_size(obs_bins, chunk)``)::

    [0, W)                      instruction words (vla.envs.WORDS, 0 = <pad>)
    [W, W + obs_bins)           observation bins (each state dimension quantised separately)
    [.., .. + chunk*ACTION_DIM) action-slot placeholders (the parallel decoding queries)
    [V - 256, V)                action bins: ``token = V - bin - 1`` (the last 256 ids)

Actions are normalised with the dataset's per-dimension q01/q99 bounds,
``a_n = 2 (a - q01) / (q99 - q01) - 1`` clipped to [-1, 1], quantised into ``ACTION_BINS``
uniform bins on [-1, 1] and decoded at the bin centres,
``a = 0.5 (a_n + 1) (q99 - q01) + q01`` (SimpleVLA-RL / OpenVLA-OFT, BOUNDS_Q99).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from vla.envs import ACTION_DIM, INSTRUCTION_LEN, OBS_DIM, WORDS

Array = jax.Array

ACTION_BINS = 256


class ActionBounds(NamedTuple):
    """Per-dimension q01 / q99 of the demonstration actions, f32[ACTION_DIM] each."""

    q01: Array
    q99: Array


def bounds_from_actions(actions: np.ndarray, weights: np.ndarray | None = None) -> ActionBounds:
    """q01/q99 over the rows of ``actions`` f32[N, ACTION_DIM] with nonzero ``weights``."""
    actions = np.asarray(actions).reshape(-1, ACTION_DIM)
    if weights is not None:
        actions = actions[np.asarray(weights).reshape(-1) > 0]
    q01, q99 = np.quantile(actions, 0.01, axis=0), np.quantile(actions, 0.99, axis=0)
    q99 = np.maximum(q99, q01 + 1e-3)  # a constant dimension still gets a valid range
    return ActionBounds(jnp.asarray(q01, jnp.float32), jnp.asarray(q99, jnp.float32))


def bin_centers() -> Array:
    edges = jnp.linspace(-1.0, 1.0, ACTION_BINS + 1)
    return 0.5 * (edges[:-1] + edges[1:])


def action_to_bin(action: Array, bounds: ActionBounds) -> Array:
    """f32[..., ACTION_DIM] -> i32[..., ACTION_DIM] bins in [0, ACTION_BINS)."""
    norm = 2.0 * (action - bounds.q01) / (bounds.q99 - bounds.q01) - 1.0
    norm = jnp.clip(norm, -1.0, 1.0)
    return jnp.clip(jnp.floor((norm + 1.0) * 0.5 * ACTION_BINS), 0, ACTION_BINS - 1).astype(
        jnp.int32
    )


def bin_to_action(bins: Array, bounds: ActionBounds) -> Array:
    """i32[..., ACTION_DIM] bins -> f32[..., ACTION_DIM] actions at the bin centres."""
    norm = bin_centers()[jnp.clip(bins, 0, ACTION_BINS - 1)]
    return 0.5 * (norm + 1.0) * (bounds.q99 - bounds.q01) + bounds.q01


def vocab_size(obs_bins: int, chunk: int) -> int:
    return len(WORDS) + obs_bins + chunk * ACTION_DIM + ACTION_BINS


def bin_to_token(bins: Array, vocab: int) -> Array:
    return (vocab - bins - 1).astype(jnp.int32)


def token_to_bin(tokens: Array, vocab: int) -> Array:
    return jnp.clip(vocab - tokens - 1, 0, ACTION_BINS - 1).astype(jnp.int32)


def obs_tokens(obs: Array, obs_bins: int) -> Array:
    """f32[..., OBS_DIM] in [-1, 1] -> i32[..., OBS_DIM] observation-bin tokens."""
    bins = jnp.clip(jnp.floor((obs + 1.0) * 0.5 * obs_bins), 0, obs_bins - 1).astype(jnp.int32)
    return len(WORDS) + bins


def prompt_tokens(instruction: Array, obs: Array, obs_bins: int, chunk: int) -> Array:
    """Instruction i32[..., INSTRUCTION_LEN] and obs f32[..., OBS_DIM] -> the policy input
    i32[..., prompt_len(chunk)]: words, observation bins, then the action-slot placeholders."""
    slots = len(WORDS) + obs_bins + jnp.arange(chunk * ACTION_DIM, dtype=jnp.int32)
    slots = jnp.broadcast_to(slots, (*instruction.shape[:-1], chunk * ACTION_DIM))
    return jnp.concatenate([instruction, obs_tokens(obs, obs_bins), slots], axis=-1)


def prompt_len(chunk: int) -> int:
    return INSTRUCTION_LEN + OBS_DIM + chunk * ACTION_DIM
