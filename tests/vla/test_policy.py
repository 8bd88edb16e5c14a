"""Chunk log-probs of the parallel action head against a token-by-token reference loop."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vla import envs, policy
from vla.tokens import ACTION_BINS, prompt_tokens


@pytest.mark.parametrize("layer", ["transformer", "mamba"])
def test_chunk_logp_matches_reference_loop_and_gradients(layer):
    chunk, obs_bins, temperature = 2, 16, 1.6
    model = policy.make_model(
        dict(layer=layer, d_model=16, n_layers=1, n_heads=2, d_state=4), obs_bins, chunk
    )
    params = policy.init_params(model, jax.random.PRNGKey(0), chunk)
    # Non-trivial logits: perturb every parameter.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
    params = jax.tree.unflatten(
        tree, [x + 0.3 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    )
    instr = jnp.array([[1, 7, 0, 0, 0], [2, 3, 6, 1, 8], [2, 3, 4, 5, 0]], jnp.int32)
    obs = jax.random.uniform(jax.random.PRNGKey(2), (3, envs.OBS_DIM), minval=-1, maxval=1)
    prompts = prompt_tokens(instr, obs, obs_bins, chunk)
    bins = jax.random.randint(jax.random.PRNGKey(3), (3, 2 * chunk), 0, ACTION_BINS)

    fast = policy.chunk_logp(model, params, prompts, bins, temperature, chunk)
    ref = policy.chunk_logp_reference(model, params, prompts, bins, temperature, chunk)
    np.testing.assert_allclose(np.asarray(fast), np.asarray(ref), rtol=1e-5, atol=1e-5)

    g_fast = jax.grad(
        lambda p: policy.chunk_logp(model, p, prompts, bins, temperature, chunk).sum()
    )
    g_ref = jax.grad(
        lambda p: policy.chunk_logp_reference(model, p, prompts, bins, temperature, chunk).sum()
    )
    for a, b in zip(jax.tree.leaves(g_fast(params)), jax.tree.leaves(g_ref(params)), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)

    # The temperature-T distribution over the 256 bins is normalised.
    logits = policy.bin_logits(model, params, prompts, chunk)
    total = jax.scipy.special.logsumexp(jax.nn.log_softmax(logits / temperature, -1), -1)
    np.testing.assert_allclose(np.asarray(total), 0.0, atol=1e-5)


def test_greedy_sampling_is_argmax_and_sampling_follows_temperature():
    logits = jnp.log(jnp.array([[[0.7, 0.2, 0.1]]]))
    greedy = policy.sample_bins(jax.random.PRNGKey(0), logits, jnp.float32(0.0))
    assert int(greedy[0, 0]) == 0
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    draws = jax.vmap(lambda k: policy.sample_bins(k, logits, jnp.float32(2.0)))(keys)
    freq = np.bincount(np.asarray(draws).reshape(-1), minlength=3) / 4000
    expected = np.asarray(jax.nn.softmax(logits[0, 0] / 2.0))
    np.testing.assert_allclose(freq, expected, atol=0.03)
