"""Parallel prefill == token-by-token decoding == the full model, for every layer type and a
hybrid; the sampler's filters against a brute-force NumPy reference; EOS stopping and the
repetition penalty inside ``generate``."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm import lm

V, B, L = 11, 2, 7
SPLIT = 3  # the two-chunk prefill: tokens[:, :SPLIT] then the rest

CONFIGS = {
    "mamba": dict(layer="mamba"),
    "mamba2": dict(layer="mamba2", ngroups=2, headdim=4),
    "s4d": dict(layer="s4d"),
    "s4": dict(layer="s4"),
    "transformer": dict(layer="transformer"),
    "hybrid": dict(layer="mamba", n_layers=3, attn_layer_idx=(1,), d_intermediate=8),
}


def _cfg(name: str) -> lm.LMConfig:
    base = dict(vocab_size=V, d_model=16, n_layers=2, max_len=L + 2, d_state=4, headdim=8,
                chunk_size=4, n_heads=2, tie_embeddings=False)  # fmt: skip
    return lm.LMConfig(**{**base, **CONFIGS[name]})


def _strip(cache):
    """S4's prefill also stores its recurrent matrices; compare only the state."""
    if hasattr(cache, "dA"):
        return cache._replace(dA=None, dB=None, C=None)
    return cache


@functools.cache
def _prefill_outputs(name: str):
    cfg = _cfg(name)
    model = lm.make_model(cfg)
    params = lm.init_params(model, jax.random.PRNGKey(0))
    toks = jax.random.randint(jax.random.PRNGKey(1), (B, L), 0, V)

    @jax.jit
    def run(params, toks):
        c0 = lm.init_caches(cfg, B, L + 2)
        pre = functools.partial(model.apply, params, method=lm.LM.prefill)
        logits_p, _, caches_p = pre(toks, c0)
        _, _, c1 = pre(toks[:, :SPLIT], c0)
        logits_2, _, caches_2 = pre(toks[:, SPLIT:], c1)

        def body(c, t):
            logits, _, c = model.apply(params, t, c, method=lm.LM.step)
            return c, logits

        caches_s, logits_s = jax.lax.scan(body, c0, toks.T)
        full = model.apply(params, toks)[0][:, -1]
        strip = lambda cs: tuple(_strip(c) for c in cs)
        return dict(prefill=(logits_p, strip(caches_p)), two_chunks=(logits_2, strip(caches_2)),
                    steps=(logits_s[-1], caches_s), full=full, raw=caches_p)  # fmt: skip

    return run(params, toks)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_prefill_equals_steps_and_full_model(name):
    out = _prefill_outputs(name)
    logits_s, caches_s = out["steps"]
    assert float(jnp.abs(logits_s).max()) > 1e-3
    tol = dict(rtol=1e-4, atol=1e-4 if name == "s4" else 2e-5)
    for key in ("prefill", "two_chunks"):
        logits, caches = out[key]
        np.testing.assert_allclose(logits, logits_s, **tol)
        np.testing.assert_allclose(logits, out["full"], **tol)
        leaves, leaves_s = jax.tree.leaves(caches), jax.tree.leaves(caches_s)
        assert len(leaves) == len(leaves_s) > 0
        for a, b in zip(leaves, leaves_s, strict=True):
            np.testing.assert_allclose(a, b, **tol)
    if name == "s4":  # prefill hands the step its precomputed recurrent matrices
        assert out["raw"][0].dA.shape == (16, 4, 4)


def test_hybrid_places_attention_at_the_given_index():
    cfg = _cfg("hybrid")
    assert cfg.layer_names() == ("mamba", "transformer", "mamba")
    params = jax.eval_shape(lambda k: lm.init_params(lm.make_model(cfg), k), jax.random.PRNGKey(0))
    p = params["params"]
    assert "qkv" in p["mixers_1"] and "A_log" in p["mixers_0"] and "A_log" in p["mixers_2"]
    assert set(p["mlps_0"]) == {"fc1", "fc2"} and "mlp_norm_2" in p


# ------------------------------------------------------------------ sampling vs brute force


def _reference_probs(logits, temperature, top_k, top_p, min_p):
    """NumPy f64 spec: temperature, top-k (ties kept), top-p on the renormalised top-k
    distribution (keep a token iff the mass strictly before it, descending, is < top_p),
    min-p (p >= min_p * p_max). Returns the sampling distribution per row."""
    out = []
    for row in np.asarray(logits, np.float64):
        x = row / temperature
        keep = np.ones_like(x, bool)
        if top_k > 0:
            keep &= x >= np.sort(x)[::-1][top_k - 1]
        if 0 < top_p < 1:
            p = np.where(keep, np.exp(x - x.max()), 0.0)
            p /= p.sum()
            order = np.argsort(-p, kind="stable")
            before = 0.0
            k2 = np.zeros_like(keep)
            for i in order:
                k2[i] = before < top_p
                before += p[i]
            keep &= k2
        if min_p > 0:
            p = np.exp(x - x.max())
            p /= p.sum()
            keep &= p >= min_p * p.max()
        q = np.where(keep, np.exp(x - x.max()), 0.0)
        out.append(q / q.sum())
    return np.stack(out)


CASES = [  # temperature, top_k, top_p, min_p
    (1.0, 0, 0.0, 0.0),
    (0.7, 3, 0.0, 0.0),
    (1.3, 0, 0.6, 0.0),
    (1.0, 4, 0.5, 0.0),
    (1.0, 0, 0.0, 0.3),
    (0.5, 5, 0.9, 0.1),
    (1.0, 0, 1.0, 0.0),
]


@pytest.mark.parametrize("temperature,top_k,top_p,min_p", CASES)
def test_warped_distribution_matches_brute_force(temperature, top_k, top_p, min_p):
    logits = jax.random.normal(jax.random.PRNGKey(5), (3, 8)) * 2.0
    s = lm.make_sampling(temperature, top_k, top_p, min_p)
    got = jax.nn.softmax(lm.warp_logits(logits, s), axis=-1)
    ref = _reference_probs(logits, temperature, top_k, top_p, min_p)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_sample_token_frequencies_match_the_reference_distribution():
    logits = jax.random.normal(jax.random.PRNGKey(6), (1, 6)) * 1.5
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    draws = jax.jit(jax.vmap(lambda k: lm.sample_token(k, logits, 0.8, 0.8, 4, 0.05)))(keys)
    freq = np.bincount(np.asarray(draws[:, 0]), minlength=6) / 4000
    ref = _reference_probs(logits, 0.8, 4, 0.8, 0.05)[0]
    np.testing.assert_allclose(freq, ref, atol=0.03)
    assert np.all(freq[ref == 0] == 0)


def test_top_p_boundary_is_strict():
    # p = the exact f32 mass of the top token: the second token's mass-before equals p, so the
    # strict rule (mamba_ssm: cumulative <= 1 - p removed) drops it; "<=" would keep it.
    logits = jnp.array([[2.0, 1.0, 0.0, -1.0]])
    p0 = jnp.max(jax.nn.softmax(logits, -1))
    kept = jnp.isfinite(lm.filter_top_p(logits, p0))
    np.testing.assert_array_equal(kept, [[True, False, False, False]])
    kept = jnp.isfinite(lm.filter_top_p(logits, jnp.nextafter(p0, 1.0)))
    np.testing.assert_array_equal(kept, [[True, True, False, False]])


def test_top_p_zero_and_one_are_off():
    logits = jnp.array([[0.0, 3.0, 1.0]])
    for p in (0.0, 1.0):
        assert bool(jnp.all(jnp.isfinite(lm.filter_top_p(logits, jnp.float32(p)))))
    # top_p = 0 samples the full distribution (the old sampler always returned token 0)
    keys = jax.random.split(jax.random.PRNGKey(1), 500)
    draws = jax.vmap(lambda k: lm.sample_token(k, logits, 1.0, 0.0))(keys)[:, 0]
    assert set(np.unique(draws)) == {0, 1, 2}


def test_greedy_branch_does_not_sort():
    jaxpr = jax.make_jaxpr(lambda k, x: lm.sample_token(k, x, 0.0, 0.5, 3))(
        jax.random.PRNGKey(0), jnp.zeros((2, 5))
    )
    (cond,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "cond"]
    sorts = [bool(re.search(r"\bsort\[", str(br))) for br in cond.params["branches"]]
    assert "argmax" in str(cond.params["branches"][0])
    assert sorts == [False, False, True]  # greedy / plain categorical / top-k, top-p
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 5))
    np.testing.assert_array_equal(lm.sample_token(jax.random.PRNGKey(0), x, 0.0, 0.5, 3),
                                  jnp.argmax(x, -1))  # fmt: skip


def test_repetition_penalty_matches_ctrl_rule():
    logits = jnp.array([[2.0, -1.0, 0.5, -3.0]])
    seen = jnp.array([[True, True, False, False]])
    got = lm.apply_repetition_penalty(logits, seen, jnp.float32(2.0))
    np.testing.assert_allclose(got, [[1.0, -2.0, 0.5, -3.0]])


# ------------------------------------------------------------------ generate: EOS, penalty


@functools.cache
def _gen_model():
    cfg = lm.LMConfig(vocab_size=V, d_model=16, n_layers=2, layer="mamba", d_state=4,
                      tie_embeddings=False)  # fmt: skip
    model = lm.make_model(cfg)
    params = lm.init_params(model, jax.random.PRNGKey(0))
    params = jax.tree_util.tree_map_with_path(
        lambda path, x: x * 30.0 if "head" in jax.tree_util.keystr(path) else x, params
    )
    return model, params


def test_eos_stops_each_row_and_pads():
    model, params = _gen_model()
    prompt = jax.random.randint(jax.random.PRNGKey(3), (3, 2), 0, V)
    key, n = jax.random.PRNGKey(4), 8
    free = np.asarray(lm.generate(model, params, prompt, key, n, temperature=0.0))
    eos = int(free[0, 3])  # row 0 emits it at its second new token
    got = np.asarray(lm.generate(model, params, prompt, key, n, temperature=0.0, eos_id=eos,
                                 pad_id=V - 1))  # fmt: skip
    want = free.copy()
    for r in range(3):
        hits = np.nonzero(free[r, 2:] == eos)[0]
        if len(hits):
            want[r, 2 + hits[0] + 1 :] = V - 1
    np.testing.assert_array_equal(got, want)
    assert (want != free).any()


def test_repetition_penalty_generate_matches_rerunning_the_model():
    model, params = _gen_model()
    prompt = jax.random.randint(jax.random.PRNGKey(8), (B, 2), 0, V)
    n, pen = 6, 3.0
    got = np.asarray(lm.generate(model, params, prompt, jax.random.PRNGKey(0), n,
                                 temperature=0.0, repetition_penalty=pen))  # fmt: skip
    full = jax.jit(lambda p, t: model.apply(p, t)[0])
    seq = np.zeros((B, 2 + n), np.int32)
    seq[:, :2] = np.asarray(prompt)
    for t in range(2, 2 + n):
        x = np.asarray(full(params, jnp.asarray(seq))[:, t - 1], np.float64)
        for r in range(B):
            for v in set(seq[r, :t].tolist()):
                x[r, v] = x[r, v] / pen if x[r, v] > 0 else x[r, v] * pen
        seq[:, t] = np.argmax(x, axis=-1)
    np.testing.assert_array_equal(got, seq)
    plain = np.asarray(
        lm.generate(model, params, prompt, jax.random.PRNGKey(0), n, temperature=0.0)
    )
    assert (plain != got).any()  # the penalty changed the greedy path
