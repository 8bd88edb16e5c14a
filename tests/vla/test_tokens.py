"""Tokenisation: the action bin <-> action <-> token mapping (OpenVLA-OFT, FLOWRL.md §6.1)."""

import jax.numpy as jnp
import numpy as np
import pytest

from vla import envs
from vla.tokens import (
    ACTION_BINS,
    ActionBounds,
    action_to_bin,
    bin_to_action,
    bin_to_token,
    bounds_from_actions,
    prompt_tokens,
    token_to_bin,
    vocab_size,
)

BOUNDS = ActionBounds(jnp.array([-0.5, -2.0]), jnp.array([1.5, 1.0]))


def test_action_round_trip_within_half_a_bin():
    rng = np.random.default_rng(0)
    lo, hi = np.asarray(BOUNDS.q01), np.asarray(BOUNDS.q99)
    a = rng.uniform(lo, hi, size=(1000, 2)).astype(np.float32)
    back = np.asarray(bin_to_action(action_to_bin(jnp.asarray(a), BOUNDS), BOUNDS))
    half_bin = (hi - lo) / ACTION_BINS / 2
    assert np.all(np.abs(back - a) <= half_bin + 1e-6)


def test_bins_cover_all_256_and_clip_outside_bounds():
    a = jnp.stack([jnp.linspace(-0.5, 1.5, 4096), jnp.linspace(-2.0, 1.0, 4096)], -1)
    bins = np.asarray(action_to_bin(a, BOUNDS))
    assert set(np.unique(bins[:, 0])) == set(range(ACTION_BINS))
    out = np.asarray(action_to_bin(jnp.array([[-9.0, 9.0]]), BOUNDS))
    assert out.tolist() == [[0, ACTION_BINS - 1]]
    # Bin 0 decodes at q01 + half a bin, the top bin at q99 - half a bin.
    edge = np.asarray(bin_to_action(jnp.array([[0, ACTION_BINS - 1]]), BOUNDS))[0]
    np.testing.assert_allclose(edge, [-0.5 + 2.0 / 512, 1.0 - 3.0 / 512], atol=1e-6)


def test_token_mapping_uses_the_last_256_ids():
    vocab = vocab_size(64, 4)
    bins = jnp.arange(ACTION_BINS)
    tokens = np.asarray(bin_to_token(bins, vocab))
    assert tokens[0] == vocab - 1 and tokens[-1] == vocab - ACTION_BINS
    np.testing.assert_array_equal(np.asarray(token_to_bin(jnp.asarray(tokens), vocab)), bins)
    # Prompt tokens never enter the action-bin slice.
    prompt = prompt_tokens(
        jnp.zeros((1, envs.INSTRUCTION_LEN), jnp.int32), jnp.ones((1, envs.OBS_DIM)), 64, 4
    )
    assert int(prompt.max()) < vocab - ACTION_BINS


def test_bounds_are_quantiles_of_weighted_rows():
    actions = np.stack([np.linspace(-1, 1, 101), np.linspace(0, 2, 101)], -1)
    weights = np.ones(101)
    weights[:50] = 0
    b = bounds_from_actions(actions, weights)
    assert float(b.q01[0]) == pytest.approx(np.quantile(actions[50:, 0], 0.01))
    assert float(b.q99[1]) == pytest.approx(np.quantile(actions[50:, 1], 0.99))
