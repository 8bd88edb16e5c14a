"""Packed sequences: with ``seq_idx``, a row of concatenated documents gives the same outputs as
each document run on its own (Mamba conv + scan, Mamba-2 conv + every SSD algorithm, attention
mask + restarted positions, a hybrid LM)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm import lm, mamba, mamba2, transformer

V, L = 11, 9
# document lengths per row; the boundaries fall inside and across the chunks of 4
DOCS = [(3, 4, 2), (6, 3)]


def _seq_idx():
    return jnp.asarray([np.repeat(np.arange(len(d)), d) for d in DOCS], jnp.int32)


@functools.cache
def _packed_vs_separate(layer: str):
    fields = dict(vocab_size=V, d_model=16, n_layers=2, max_len=L, d_state=4, headdim=8,
                  chunk_size=4, n_heads=2, d_conv=3)  # fmt: skip
    if layer == "hybrid":
        fields.update(layer="mamba2", n_layers=3, attn_layer_idx=(1,), d_intermediate=8)
    else:
        fields.update(layer=layer)
    model = lm.make_model(fields)
    params = lm.init_params(model, jax.random.PRNGKey(0))
    toks = jax.random.randint(jax.random.PRNGKey(1), (len(DOCS), L), 0, V)
    # every document left-aligned in its own row of a (n_docs, L) buffer: the model is causal,
    # so its first len(doc) outputs are the document's outputs when run alone
    rows, where = [], []
    for r, d in enumerate(DOCS):
        start = 0
        for n in d:
            rows.append(np.pad(np.asarray(toks[r, start : start + n]), (0, L - n)))
            where.append((r, start, n))
            start += n
    alone = jnp.asarray(np.stack(rows))

    @jax.jit
    def run(params, toks, alone, seq_idx):
        return model.apply(params, toks, seq_idx)[0], model.apply(params, alone)[0]

    packed, sep = run(params, toks, alone, _seq_idx())
    unpacked = model.apply(params, toks)[0] if layer == "mamba" else None
    want = np.zeros_like(np.asarray(packed))
    for i, (r, start, n) in enumerate(where):
        want[r, start : start + n] = np.asarray(sep[i, :n])
    return np.asarray(packed), want, unpacked


@pytest.mark.parametrize("layer", ["mamba", "mamba2", "transformer", "hybrid"])
def test_packed_rows_equal_documents_run_separately(layer):
    packed, want, unpacked = _packed_vs_separate(layer)
    np.testing.assert_allclose(packed, want, rtol=1e-4, atol=2e-5)
    if unpacked is not None:  # without seq_idx the documents leak into each other
        assert not np.allclose(unpacked, want, atol=1e-3)


def test_s4_rejects_seq_idx():
    model = lm.make_model(dict(vocab_size=V, d_model=8, n_layers=1, layer="s4d", d_state=4))
    params = jax.eval_shape(lambda k: lm.init_params(model, k), jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="seq_idx"):
        jax.eval_shape(model.apply, params, jnp.zeros((2, L), jnp.int32), _seq_idx())


def test_conv_window_resets_at_boundaries():
    rng = np.random.default_rng(0)
    x, w, b = rng.normal(size=(2, L, 3)), rng.normal(size=(3, 3)), rng.normal(size=3)
    seq = np.asarray(_seq_idx())
    y, _ = mamba.causal_depthwise_conv(jnp.asarray(x), jnp.asarray(w), jnp.asarray(b), None,
                                       jnp.asarray(seq))  # fmt: skip
    ref = np.zeros_like(x)
    for r in range(2):
        for t in range(L):
            ref[r, t] = b
            for k in range(3):
                s = t - (2 - k)
                if s >= 0 and seq[r, s] == seq[r, t]:
                    ref[r, t] += w[k] * x[r, s]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_segment_positions_restart_per_document():
    np.testing.assert_array_equal(
        transformer.segment_positions(_seq_idx()),
        [[0, 1, 2, 0, 1, 2, 3, 0, 1], [0, 1, 2, 3, 4, 5, 0, 1, 2]],
    )


@functools.cache
def _ssd_packed():
    b, h, p, n, g = 2, 4, 3, 5, 2
    k = jax.random.split(jax.random.PRNGKey(4), 6)
    x = jax.random.normal(k[0], (b, L, h, p))
    dt = jax.nn.softplus(jax.random.normal(k[1], (b, L, h)) - 1.0)
    A = -jnp.exp(jax.random.uniform(k[2], (h,), minval=0.0, maxval=2.0))
    B = jax.random.normal(k[3], (b, L, g, n))
    C = jax.random.normal(k[4], (b, L, g, n))
    h0 = jax.random.normal(k[5], (b, h, p, n))
    seq = _seq_idx()

    @jax.jit
    def run(x, dt, A, B, C, h0):
        out = {name: fn(x, dt, A, B, C, 4, h0, seq) for name, fn in mamba2.SSD_FNS.items()}
        out["chunk8"] = mamba2.ssd_chunked(x, dt, A, B, C, 8, h0, seq)
        return out

    out = run(x, dt, A, B, C, h0)
    # reference: each document separately with the plain recurrence; h0 feeds the first one
    y = np.zeros(x.shape, np.float32)
    finals = []
    for r, d in enumerate(DOCS):
        start, H = 0, h0[r : r + 1]
        for i, m in enumerate(d):
            sl = slice(start, start + m)
            init = H if i == 0 else None
            yd, H = mamba2.ssd_recurrent(x[r : r + 1, sl], dt[r : r + 1, sl], A,
                                         B[r : r + 1, sl], C[r : r + 1, sl], init)  # fmt: skip
            y[r, sl] = np.asarray(yd[0])
            start += m
        finals.append(np.asarray(H[0]))
    return out, y, np.stack(finals)


@pytest.mark.parametrize("impl", [*mamba2.SSD_IMPLS, "chunk8"])
def test_ssd_seq_idx_equals_separate_documents(impl):
    out, y_ref, final_ref = _ssd_packed()
    y, final = out[impl]
    np.testing.assert_allclose(y, y_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(final, final_ref, rtol=1e-4, atol=1e-4)
