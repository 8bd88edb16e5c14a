"""S4 / S4D / Mamba / Mamba-2 layers: closed forms, kernel = explicit sums, conv = recurrence."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm import hippo, mamba, mamba2, s4, s4d

# fp32 tolerances (SSM.md §1.3 / §4.4): outputs of magnitude ~1.
RTOL, ATOL = 1e-4, 1e-5


# ------------------------------------------------------------------ HiPPO / DPLR (numpy, f64)


def _hippo_closed_form(N):
    A = np.zeros((N, N))
    for n in range(N):
        for k in range(N):
            if n > k:
                A[n, k] = -np.sqrt(2 * n + 1) * np.sqrt(2 * k + 1)
            elif n == k:
                A[n, k] = -(n + 1)
    return A, np.array([np.sqrt(2 * n + 1) for n in range(N)])


@pytest.mark.parametrize("N", [1, 4, 9])
def test_hippo_legs_matches_closed_form(N):
    A, B = hippo.make_hippo_legs(N)
    A_ref, B_ref = _hippo_closed_form(N)
    np.testing.assert_allclose(A, A_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(B, B_ref, rtol=1e-12)


def test_nplr_normal_part_is_skew_minus_half():
    A, P, _ = hippo.make_nplr_legs(8)
    S = A + np.outer(P, P)
    # S = -1/2 I + skew-symmetric  <=>  S + S^T = -I
    np.testing.assert_allclose(S + S.T, -np.eye(8), atol=1e-12)


@pytest.mark.parametrize("N", [4, 8])
def test_dplr_reconstructs_hippo(N):
    d = hippo.make_dplr_legs(N)
    assert np.all(d.Lambda.imag <= 1e-12)
    np.testing.assert_allclose(d.Lambda.real, -0.5, atol=1e-12)
    V = np.concatenate([d.V, d.V.conj()], axis=1)
    lam = np.concatenate([d.Lambda, d.Lambda.conj()])
    Pt = np.concatenate([d.P, d.P.conj()])
    A_rec = V @ (np.diag(lam) - np.outer(Pt, Pt.conj())) @ V.conj().T
    A, _, B = hippo.make_nplr_legs(N)
    np.testing.assert_allclose(A_rec, A, atol=1e-9)
    np.testing.assert_allclose(V @ np.concatenate([d.B, d.B.conj()]), B, atol=1e-9)


# ------------------------------------------------------------------ kernels vs explicit sums


@pytest.mark.parametrize("init", s4d.INITS)
@pytest.mark.parametrize("disc", s4d.DISCRETISATIONS)
def test_s4d_kernel_equals_explicit_sum(init, disc):
    H, N, L = 2, 6, 12
    rng = np.random.default_rng(0)
    A = np.broadcast_to(s4d.init_diag_A(init, N), (H, N // 2))
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), (H, 1)))
    C = rng.normal(size=(H, N // 2)) + 1j * rng.normal(size=(H, N // 2))
    dA, dB = s4d.discretize(jnp.asarray(dt * A, jnp.complex64), jnp.asarray(dt, jnp.float32), disc)
    K = s4d.vandermonde_kernel(jnp.asarray(C, jnp.complex64) * dB, dA, L)
    # explicit K_l = 2 Re sum_n C_n dA_n^l dB_n in f64, discretisation written out again
    dtA = dt * A
    if disc == "zoh":
        dA_r, dB_r = np.exp(dtA), (np.exp(dtA) - 1) / A
    else:
        dA_r, dB_r = (1 + dtA / 2) / (1 - dtA / 2), dt / (1 - dtA / 2)
    K_ref = np.stack([2 * np.real(np.sum(C * dA_r**l * dB_r, -1)) for l in range(L)], -1)
    np.testing.assert_allclose(K, K_ref, rtol=1e-4, atol=1e-5 * np.abs(K_ref).max())


def test_s4_cauchy_kernel_equals_recurrent_powers():
    H, N, L = 2, 8, 16
    d = hippo.make_dplr_legs(N)
    rng = np.random.default_rng(1)
    Ct = rng.normal(size=(H, N // 2)) + 1j * rng.normal(size=(H, N // 2))
    c64 = lambda x: jnp.asarray(np.broadcast_to(x, (H, N // 2)), jnp.complex64)
    dt = jnp.asarray([0.01, 0.1], jnp.float32)
    K = s4.kernel_dplr(c64(d.Lambda), c64(d.P), c64(d.B), c64(Ct), dt, L)
    for h in range(H):
        dA, dB, C = (np.asarray(a, np.complex128) for a in s4.discrete_dplr(
            c64(d.Lambda)[h], c64(d.P)[h], c64(d.B)[h], c64(Ct)[h], dt[h], L))  # fmt: skip
        K_ref = [np.real(C @ np.linalg.matrix_power(dA, l) @ dB) for l in range(L)]
        np.testing.assert_allclose(K[h], K_ref, rtol=1e-3, atol=1e-4 * np.abs(K_ref).max())


def test_s4_bilinear_matches_dense_hippo_discretisation():
    # Independent path: dense HiPPO A, bilinear (I - dt/2 A)^-1 (I + dt/2 A); with C = ones the
    # kernel C dA^l dB is basis independent, so it must match the DPLR recurrence.
    N, L, dt = 6, 10, 0.05
    A, B = hippo.make_hippo_legs(N)
    inv = np.linalg.inv(np.eye(N) - dt / 2 * A)
    dA_ref, dB_ref = inv @ (np.eye(N) + dt / 2 * A), inv @ (dt * B)
    d = hippo.make_dplr_legs(N)
    c = np.random.default_rng(2).normal(size=N)  # real C in the HiPPO basis
    V = np.concatenate([d.V, d.V.conj()], axis=1)
    C_eig = c @ V  # C in the eigenbasis (full state)
    Ct_half = C_eig[: N // 2].conj()  # only dA, dB are used below
    dA, dB, _ = s4.discrete_dplr(*(jnp.asarray(x, jnp.complex64) for x in
                                   (d.Lambda, d.P, d.B, Ct_half)), jnp.float32(dt), L)  # fmt: skip
    dA, dB = np.asarray(dA, np.complex128), np.asarray(dB, np.complex128)
    for l in range(L):
        ref = c @ np.linalg.matrix_power(dA_ref, l) @ dB_ref
        got = np.real(C_eig @ np.linalg.matrix_power(dA, l) @ dB)
        np.testing.assert_allclose(got, ref, rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------ conv == recurrence


@functools.cache
def _conv_and_rec(kind: str):
    """Returns (y_conv, y_rec) for a small layer of ``kind`` on random inputs (jitted once)."""
    Bsz, L, H = 2, 13, 16
    layers = {
        "s4d_lin_zoh": (s4d.S4DLayer(H, 8, a_init="lin"), lambda: s4d.init_s4d_cache(Bsz, H, 8)),
        "s4d_inv_bilinear": (s4d.S4DLayer(H, 8, a_init="inv", disc="bilinear"),
                             lambda: s4d.init_s4d_cache(Bsz, H, 8)),
        "s4": (s4.S4Layer(H, 8, l_max=16), lambda: s4.init_s4_cache(Bsz, H, 8)),
        "mamba": (mamba.MambaMixer(H, d_state=4), lambda: mamba.init_mamba_cache(Bsz, H, 4, 4, 2)),
        "mamba2": (mamba2.Mamba2Mixer(H, d_state=4, headdim=8, chunk_size=4),
                   lambda: mamba2.init_mamba2_cache(Bsz, H, 4, 4, 2, 8, 1)),
    }  # fmt: skip
    layer, cache = layers[kind]
    u = jax.random.normal(jax.random.PRNGKey(1), (Bsz, L, H))
    params = jax.jit(layer.init)(jax.random.PRNGKey(0), u)

    @jax.jit
    def run(params, u):
        y = layer.apply(params, u)

        def body(c, ut):
            yt, c = layer.apply(params, ut, c, method=layer.step)
            return c, yt

        _, yr = jax.lax.scan(body, cache(), jnp.moveaxis(u, 1, 0))
        return y, jnp.moveaxis(yr, 0, 1)

    return run(params, u)


@pytest.mark.parametrize("kind", ["s4d_lin_zoh", "s4d_inv_bilinear", "s4", "mamba", "mamba2"])
def test_conv_mode_equals_recurrent_mode(kind):
    y, yr = _conv_and_rec(kind)
    assert float(jnp.abs(y).max()) > 1e-3  # not trivially zero
    tol = 1e-4 if kind == "s4" else ATOL  # S4's dense bilinear step in complex64
    np.testing.assert_allclose(y, yr, rtol=RTOL, atol=tol)


def test_fft_conv_is_linear_causal_convolution():
    rng = np.random.default_rng(3)
    u, K = rng.normal(size=(2, 9, 3)), rng.normal(size=(3, 9))
    ref = np.zeros_like(u)
    for t in range(9):
        for k in range(t + 1):
            ref[:, t] += K[:, k] * u[:, t - k]
    np.testing.assert_allclose(s4d.fft_conv(jnp.asarray(u), jnp.asarray(K)), ref, atol=1e-5)


# ------------------------------------------------------------------ Mamba-2 SSD


@functools.cache
def _ssd_inputs(l=19, g=2):
    b, h, p, n = 2, 4, 3, 5
    k = jax.random.split(jax.random.PRNGKey(4), 6)
    x = jax.random.normal(k[0], (b, l, h, p))
    dt = jax.nn.softplus(jax.random.normal(k[1], (b, l, h)) - 1.0)
    A = -jnp.exp(jax.random.uniform(k[2], (h,), minval=0.0, maxval=2.0))
    B = jax.random.normal(k[3], (b, l, g, n))
    C = jax.random.normal(k[4], (b, l, g, n))
    h0 = jax.random.normal(k[5], (b, h, p, n))
    return x, dt, A, B, C, h0


@functools.cache
def _ssd_outputs():
    """All SSD forms, outputs, final states and input gradients, in one compiled function."""
    x, dt, A, B, C, h0 = _ssd_inputs()
    w = jax.random.normal(jax.random.PRNGKey(9), x.shape)
    args = (x, dt, A, B, C)

    @jax.jit
    def run(x, dt, A, B, C, h0):
        out = {
            "rec": mamba2.ssd_recurrent(x, dt, A, B, C),
            "quad": mamba2.ssd_quadratic(x, dt, A, B, C)[0],
        }
        for T in (4, 8, 32):
            out[f"chunk{T}"] = mamba2.ssd_chunked(x, dt, A, B, C, T)
        out["rec_h0"] = mamba2.ssd_recurrent(x, dt, A, B, C, h0)
        out["chunk_h0"] = mamba2.ssd_chunked(x, dt, A, B, C, 8, h0)
        loss = lambda f: lambda *a: jnp.sum(w * f(*a)[0])
        out["g_rec"] = jax.grad(loss(mamba2.ssd_recurrent), (0, 1, 2, 3, 4))(*args)
        out["g_chunk"] = jax.grad(loss(lambda *a: mamba2.ssd_chunked(*a, 8)), (0, 1, 2, 3, 4))(
            *args
        )
        return out

    return run(x, dt, A, B, C, h0)


@pytest.mark.parametrize("chunk", [4, 8, 32])
def test_ssd_chunked_equals_quadratic_and_recurrence(chunk):
    out = _ssd_outputs()
    y_rec, h_rec = out["rec"]
    y_chk, h_chk = out[f"chunk{chunk}"]
    np.testing.assert_allclose(out["quad"], y_rec, rtol=RTOL, atol=1e-4)
    np.testing.assert_allclose(y_chk, y_rec, rtol=RTOL, atol=1e-4)
    np.testing.assert_allclose(h_chk, h_rec, rtol=RTOL, atol=1e-4)


def test_ssd_chunked_initial_state_and_gradients():
    out = _ssd_outputs()
    for a, b in zip(out["chunk_h0"], out["rec_h0"], strict=True):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-4)
    assert not np.allclose(out["rec_h0"][0], out["rec"][0])  # h0 matters
    for a, b in zip(out["g_chunk"], out["g_rec"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_segsum_matches_loop():
    a = np.random.default_rng(5).normal(size=6)
    s = np.asarray(mamba2.segsum(jnp.asarray(a)))
    for i in range(6):
        for j in range(6):
            ref = a[j + 1 : i + 1].sum() if i >= j else -np.inf
            assert s[i, j] == pytest.approx(ref, abs=1e-5)


# ------------------------------------------------------------------ Mamba init


def test_mamba_init_matches_upstream_recipe():
    m = mamba.MambaMixer(32, d_state=8, dt_min=0.001, dt_max=0.1)
    p = jax.jit(m.init)(jax.random.PRNGKey(0), jnp.zeros((1, 4, 32)))["params"]
    chex.assert_shape(p["A_log"], (64, 8))
    np.testing.assert_allclose(jnp.exp(p["A_log"]), jnp.broadcast_to(jnp.arange(1, 9), (64, 8)),
                               rtol=1e-6)  # fmt: skip
    np.testing.assert_allclose(p["D"], 1.0)
    dt = jax.nn.softplus(p["dt_b"])
    assert float(dt.min()) >= 0.001 * 0.999 and float(dt.max()) <= 0.1 * 1.001
    std = m.rank**-0.5  # dt_rank = ceil(32/16) = 2
    assert m.rank == 2 and float(jnp.abs(p["dt_w"]).max()) <= std
    chex.assert_shape(p["x_proj"]["kernel"], (64, 2 + 2 * 8))


def test_mamba_scan_backends_agree():
    m_ref = mamba.MambaMixer(16, d_state=4, scan_method="ref")
    m_chk = mamba.MambaMixer(16, d_state=4, scan_method="chunked", chunk_size=4)
    u = jax.random.normal(jax.random.PRNGKey(2), (2, 10, 16))
    p = jax.jit(m_ref.init)(jax.random.PRNGKey(0), u)
    y_chk = jax.jit(m_chk.apply)(p, u)
    np.testing.assert_allclose(y_chk, jax.jit(m_ref.apply)(p, u), rtol=RTOL, atol=ATOL)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="registered inits"):
        s4d.init_diag_A("nope", 4)
    with pytest.raises(ValueError, match="even"):
        s4d.init_diag_A("lin", 5)
    with pytest.raises(ValueError, match="registered"):
        s4d.discretize(jnp.ones(2, jnp.complex64), 1.0, "euler")
    with pytest.raises(ValueError, match="headdim"):
        mamba2.Mamba2Mixer(16, headdim=5).init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 16)))
