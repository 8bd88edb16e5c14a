"""Causal LM: cached generation == re-running the full model, log-probs, sampling, validation."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from ssm import lm

V, P, NEW, B = 13, 3, 5, 2


@functools.cache
def _setup(layer: str):
    cfg = lm.LMConfig(vocab_size=V, d_model=16, n_layers=2, layer=layer, max_len=P + NEW,
                      d_state=4, headdim=8, chunk_size=4, n_heads=2, tie_embeddings=False)  # fmt: skip
    model = lm.make_model(cfg)
    params = lm.init_params(model, jax.random.PRNGKey(0))
    # Larger head weights so greedy choices are not near-ties.
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 30.0 if "head" in jax.tree_util.keystr(path) else x, params
    )
    return model, params


@pytest.mark.parametrize("layer", lm.layer_names())
def test_greedy_generate_equals_rerunning_full_model(layer):
    model, params = _setup(layer)
    prompt = jax.random.randint(jax.random.PRNGKey(1), (B, P), 0, V)
    out = lm.generate(model, params, prompt, jax.random.PRNGKey(2), NEW, temperature=0.0)
    chex.assert_shape(out, (B, P + NEW))
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out[:, :P], prompt)

    # Re-run the parallel model on the growing prefix. A causal model's logits at position t do
    # not depend on later tokens, so one fixed-length buffer (one compile) holds every prefix.
    full = jax.jit(lambda p, t: model.apply(p, t)[0])
    seq = np.zeros((B, P + NEW), np.int32)
    seq[:, :P] = np.asarray(prompt)
    for t in range(P, P + NEW):
        logits = full(params, jnp.asarray(seq))
        seq[:, t] = np.argmax(np.asarray(logits[:, t - 1]), axis=-1)
    np.testing.assert_array_equal(np.asarray(out), seq)


def test_sampling_is_deterministic_and_top_p_tiny_is_greedy():
    model, params = _setup("mamba")
    prompt = jnp.zeros((B, P), jnp.int32)
    k = jax.random.PRNGKey(7)
    a = lm.generate(model, params, prompt, k, NEW, temperature=1.0)
    b = lm.generate(model, params, prompt, k, NEW, temperature=1.0)
    np.testing.assert_array_equal(a, b)
    greedy = lm.generate(model, params, prompt, k, NEW, temperature=0.0)
    nucleus = lm.generate(model, params, prompt, k, NEW, temperature=1.0, top_p=1e-6)
    np.testing.assert_array_equal(nucleus, greedy)


def test_sample_token_top_p_keeps_the_nucleus():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    keys = jax.random.split(jax.random.PRNGKey(0), 2000)
    draws = jax.vmap(lambda k: lm.sample_token(k, logits, 1.0, 0.7))(keys)[:, 0]
    # nucleus for top_p = 0.7 is {0, 1} (0.5 < 0.7 <= 0.8): renormalised probs 0.625 / 0.375
    assert set(np.unique(draws)) == {0, 1}
    assert abs(float(jnp.mean(draws == 0)) - 0.625) < 0.05


def test_token_logprobs_and_hidden():
    model, params = _setup("transformer")
    toks = jax.random.randint(jax.random.PRNGKey(3), (B, 7), 0, V)
    lp = jax.jit(lambda p, t: lm.token_logprobs(model, p, t))(params, toks)
    chex.assert_shape(lp, (B, 6))
    logits, hidden = jax.jit(model.apply)(params, toks)
    chex.assert_shape(hidden, (B, 7, 16))
    ref = jax.nn.log_softmax(logits, -1)[np.arange(B)[:, None], np.arange(6)[None], toks[:, 1:]]
    np.testing.assert_allclose(lp, ref, rtol=1e-6, atol=1e-6)
    assert logits.dtype == jnp.float32 and hidden.dtype == jnp.float32


def test_tied_embeddings_have_no_head():
    cfg = lm.LMConfig(vocab_size=V, d_model=8, n_layers=1, layer="s4d", d_state=4)
    model = lm.make_model(cfg)
    params = jax.eval_shape(lambda k: lm.init_params(model, k), jax.random.PRNGKey(0))["params"]
    assert "head" not in params and "embed" in params


def test_bad_config_raises_with_allowed_values():
    with pytest.raises(ValueError, match=r"config.model.layer='lstm' is not registered"):
        lm.make_model({"layer": "lstm"})
    with pytest.raises(ValueError, match="unknown model config fields"):
        lm.make_model({"layer": "mamba", "d_modle": 3})
    with pytest.raises(ValueError, match="scan_method"):
        lm.make_model({"layer": "mamba", "scan_method": "cuda"})
    model, params = _setup("s4")
    with pytest.raises(ValueError, match="max_len"):
        lm.generate(model, params, jnp.zeros((1, P), jnp.int32), jax.random.PRNGKey(0), NEW + 1)


@pytest.mark.parametrize(
    "fields,match",
    [({"layer": "mamba2", "ssd_impl": "fft"}, r"config.model.ssd_impl='fft'.*chunked"),
     ({"layer": "s4d", "s4d_disc": "euler"}, r"config.model.s4d_disc='euler'.*bilinear"),
     ({"layer": "s4", "d_state": 5}, r"config.model.d_state=5 must be even"),
     ({"layer": "transformer", "d_model": 0}, r"config.model.d_model")],
)  # fmt: skip
def test_validate_runs_the_layer_registry_check(fields, match):
    with pytest.raises(harness.ConfigError, match=match):
        lm.validate(fields)
    # a field another layer reads is not checked for this one
    assert lm.validate({"layer": "transformer", "ssd_impl": "fft"}).layer == "transformer"
