"""Selective-scan back-ends vs the reference (SSM.md §1.3 recipe and tolerances).

Kinds (STYLE.md §9): (a) "ref" against a literal numpy port of mamba_ssm's ``selective_scan_ref``
loop; (b) every back-end vs "ref" on outputs, last state and the gradient of every input;
(e) registry-driven parametrization; plus the decode step and input validation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm import scan

# Upstream tests/ops/test_selective_scan.py tolerances: (rtol, atol) of the output per dtype.
TOL = {jnp.float32: (6e-4, 2e-3), jnp.bfloat16: (3e-2, 5e-2)}
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def make_inputs(
    seed,
    batch,
    length,
    d_inner,
    d_state,
    groups=1,
    dtype=jnp.float32,
    with_D=True,
    with_z=True,
    with_bias=True,
):
    """SSM.md §1.3 recipe: A = -0.5 rand, delta = 0.5 rand, delta_bias = 0.5 rand, the rest
    randn. Activations in ``dtype``; A, D, delta_bias in f32 as upstream's weights.

    Returns a dict name -> array (None for absent options)."""
    rng = np.random.default_rng(seed)
    bc_shape = (batch, length, d_state) if groups == 1 else (batch, length, groups, d_state)
    act = (batch, length, d_inner)
    randn = lambda shape, dt=dtype: jnp.asarray(rng.standard_normal(shape), dt)
    rand = lambda shape, dt=dtype: jnp.asarray(0.5 * rng.random(shape), dt)
    return {
        "u": randn(act),
        "delta": rand(act),
        "A": -rand((d_inner, d_state), jnp.float32),
        "B": randn(bc_shape),
        "C": randn(bc_shape),
        "D": randn((d_inner,), jnp.float32) if with_D else None,
        "z": randn(act) if with_z else None,
        "delta_bias": rand((d_inner,), jnp.float32) if with_bias else None,
    }


@functools.cache
def forward(method, delta_softplus, chunk_size=8):
    """Jitted (y, last_state) of one back-end, shared across tests."""
    return jax.jit(
        functools.partial(
            scan.selective_scan,
            delta_softplus=delta_softplus,
            return_last_state=True,
            method=method,
            chunk_size=chunk_size,
        )
    )


def args_of(inputs):
    return tuple(inputs[name] for name in ARG_NAMES)


def kwargs_of(inputs):
    """Extra keyword inputs (``initial_state``) of a test case."""
    return {k: v for k, v in inputs.items() if k not in ARG_NAMES}


@functools.cache
def value_and_grads(method, delta_softplus, chunk_size=8):
    """Jitted (y, last_state, grads of every non-None input) for one back-end.

    The scalar loss contracts y and last_state with fixed random cotangents, so the gradient of
    the last state is checked too (as upstream's ``out.backward(g)``)."""

    def loss(args, gy, gh):
        y, last = scan.selective_scan(
            *args,
            delta_softplus=delta_softplus,
            return_last_state=True,
            method=method,
            chunk_size=chunk_size,
        )
        return jnp.sum(y.astype(jnp.float32) * gy) + jnp.sum(last * gh), (y, last)

    @jax.jit
    def run(args, gy, gh):
        (_, (y, last)), grads = jax.value_and_grad(loss, has_aux=True)(args, gy, gh)
        return y, last, grads

    return run


def cotangents(inputs, seed=123):
    u, A = inputs["u"], inputs["A"]
    rng = np.random.default_rng(seed)
    gy = jnp.asarray(rng.standard_normal(u.shape), jnp.float32)
    gh = jnp.asarray(rng.standard_normal((u.shape[0],) + A.shape), jnp.float32)
    return gy, gh


def grad_tol(name, dtype, has_z):
    """Upstream's per-gradient tolerances: du x2; ddelta rtol x5 / atol x10; weight gradients
    (A, D, delta_bias) 1e-3 raised to the output tolerance when z is present (dA atol x5);
    variable B/C and z at the output tolerance. Weight gradients of bf16 runs use the output
    tolerance too, since their cotangents are rounded to bf16 (upstream tests bf16 with z)."""
    rtol, atol = TOL[dtype]
    rtolw, atolw = 1e-3, 1e-3
    if has_z or dtype == jnp.bfloat16:
        rtolw, atolw = max(rtolw, rtol), max(atolw, atol)
    return {
        "u": (2 * rtol, 2 * atol),
        "delta": (5 * rtol, 10 * atol),
        "A": (rtolw, 5 * atolw),
        "B": (rtol, atol),
        "C": (rtol, atol),
        "D": (rtolw, atolw),
        "z": (rtol, atol),
        "delta_bias": (rtolw, atolw),
    }[name]


def assert_close(name, x, y, rtol, atol):
    np.testing.assert_allclose(
        np.asarray(x, np.float32), np.asarray(y, np.float32), rtol=rtol, atol=atol, err_msg=name
    )


def check_against_ref(method, inputs, delta_softplus, dtype, chunk_size=8):
    gy, gh = cotangents(inputs)
    args = args_of(inputs)
    y, last, grads = value_and_grads(method, delta_softplus, chunk_size)(args, gy, gh)
    y_r, last_r, grads_r = value_and_grads("ref", delta_softplus)(args, gy, gh)
    rtol, atol = TOL[dtype]
    assert y.dtype == inputs["u"].dtype and y.shape == inputs["u"].shape
    assert last.dtype == jnp.float32
    assert_close("y", y, y_r, rtol, atol)
    assert_close("last_state", last, last_r, rtol, atol)
    for name, g, g_r in zip(ARG_NAMES, grads, grads_r, strict=True):
        if inputs[name] is None:
            assert g is None
            continue
        assert g.dtype == inputs[name].dtype and g.shape == inputs[name].shape, name
        assert np.all(np.isfinite(np.asarray(g, np.float32))), name
        assert_close(f"d{name}", g, g_r, *grad_tol(name, dtype, inputs["z"] is not None))


# (batch, length, d_inner, d_state, groups, dtype, with_D, with_z, with_bias, softplus).
# Lengths are odd and not multiples of the chunk (8), so padding of the last chunk is exercised.
FAST_CASES = {
    "f32-all-options": (2, 37, 8, 4, 1, jnp.float32, True, True, True, True),
    "f32-bare-grouped-batch1": (1, 21, 8, 4, 2, jnp.float32, False, False, False, False),
    "bf16-all-options-grouped": (2, 19, 8, 4, 2, jnp.bfloat16, True, True, True, True),
}
SLOW_CASES = {
    f"{np.dtype(dt).name}-L{L}-G{G}-D{wd:d}z{wz:d}b{wb:d}s{sp:d}": (
        2,
        L,
        16,
        8,
        G,
        dt,
        wd,
        wz,
        wb,
        sp,
    )
    for dt in (jnp.float32, jnp.bfloat16)
    for L in (128, 255, 1000)
    for G in (1, 2)
    for (wd, wz, wb, sp) in (
        (True, True, True, True),
        (False, False, False, False),
        (True, False, True, False),
    )
}
XLA_METHODS = ("associative", "chunked")


def _run_case(method, case):
    batch, length, d_inner, d_state, groups, dtype, wD, wz, wb, sp = case
    inputs = make_inputs(length, batch, length, d_inner, d_state, groups, dtype, wD, wz, wb)
    check_against_ref(method, inputs, sp, dtype)


@pytest.mark.parametrize("case", list(FAST_CASES), ids=str)
@pytest.mark.parametrize("method", XLA_METHODS)
def test_backend_matches_ref(method, case):
    _run_case(method, FAST_CASES[case])


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SLOW_CASES), ids=str)
@pytest.mark.parametrize("method", XLA_METHODS)
def test_backend_matches_ref_grid(method, case):
    _run_case(method, SLOW_CASES[case])


def numpy_upstream_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Literal numpy port of mamba_ssm ``selective_scan_ref`` (channel-major B D L layout,
    variable/grouped B, C as (B, G, N, L)), float64."""
    u, delta, z = (
        None if x is None else np.moveaxis(np.asarray(x, np.float64), 1, 2) for x in (u, delta, z)
    )
    A = np.asarray(A, np.float64)
    B, C = (np.asarray(x, np.float64) for x in (B, C))
    B, C = (x[:, :, None] if x.ndim == 3 else x for x in (B, C))  # (b, L, G, N)
    B, C = (np.transpose(x, (0, 2, 3, 1)) for x in (B, C))  # (b, G, N, L)
    if delta_bias is not None:
        delta = delta + np.asarray(delta_bias, np.float64)[:, None]
    if delta_softplus:
        delta = np.log1p(np.exp(delta))
    batch, dim, dstate = u.shape[0], A.shape[0], A.shape[1]
    B = np.repeat(B, dim // B.shape[1], axis=1)  # "B G N L -> B (G H) N L"
    C = np.repeat(C, dim // C.shape[1], axis=1)
    deltaA = np.exp(np.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = np.einsum("bdl,bdnl,bdl->bdln", delta, B, u)
    x = np.zeros((batch, dim, dstate))
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(np.einsum("bdn,bdn->bd", x, C[:, :, :, i]))
    out = np.stack(ys, axis=2)
    if D is not None:
        out = out + u * np.asarray(D, np.float64)[:, None]
    if z is not None:
        out = out * z / (1 + np.exp(-z))
    return np.moveaxis(out, 2, 1), x


@pytest.mark.parametrize("case", ["f32-all-options", "f32-bare-grouped-batch1"])
def test_ref_matches_numpy_port_of_upstream(case):
    batch, length, d_inner, d_state, groups, dtype, wD, wz, wb, sp = FAST_CASES[case]
    inputs = make_inputs(7, batch, length, d_inner, d_state, groups, dtype, wD, wz, wb)
    y, last, _ = value_and_grads("ref", sp)(args_of(inputs), *cotangents(inputs))
    y_np, last_np = numpy_upstream_ref(*args_of(inputs), sp)
    assert_close("y", y, y_np, 1e-5, 1e-5)
    assert_close("last_state", last, last_np, 1e-5, 1e-5)


@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_chunked_any_chunk_size(chunk_size):
    """Chunk 1, a chunk that does not divide L = 23, and a chunk longer than L."""
    inputs = make_inputs(3, 2, 23, 8, 4, groups=2)  # the shapes of the vmap test's inputs
    y, last = forward("chunked", True, chunk_size)(*args_of(inputs))
    y_r, last_r = forward("ref", True)(*args_of(inputs))
    assert_close("y", y, y_r, *TOL[jnp.float32])
    assert_close("last_state", last, last_r, *TOL[jnp.float32])


def _temp_bytes(method, batch, length, d_inner, d_state, grad):
    f32 = lambda s: jax.ShapeDtypeStruct(s, jnp.float32)
    specs = (
        f32((batch, length, d_inner)),
        f32((batch, length, d_inner)),
        f32((d_inner, d_state)),
        f32((batch, length, d_state)),
        f32((batch, length, d_state)),
    )
    fwd = lambda *a: scan.selective_scan(*a, method=method, chunk_size=32)
    fn = jax.grad(lambda *a: jnp.sum(fwd(*a)), argnums=tuple(range(5))) if grad else fwd
    return jax.jit(fn).lower(*specs).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("grad", [False, True], ids=["fwd", "fwd+bwd"])
def test_chunked_memory_does_not_grow_as_batch_length_dinner_dstate(grad):
    """XLA's compiled temp buffer of "chunked" grows with L by far less than one f32[b, D, N]
    state per step (only O(b L D) inputs, their f32 copies and gradients grow), forward and
    backward; "associative" grows by several states per step."""
    batch, d_inner, d_state = 1, 128, 128
    per_step = 4 * batch * d_inner * d_state

    def growth(method):
        small = _temp_bytes(method, batch, 256, d_inner, d_state, grad)
        return (_temp_bytes(method, batch, 1024, d_inner, d_state, grad) - small) / (768 * per_step)

    assert growth("chunked") < 0.25
    if not grad:  # the contrast: the measure does see f32[b, L, D, N] intermediates
        assert growth("associative") > 1.0


@functools.cache
def split_scan_and_grad(method):
    """Jitted: scan the sequence in two parts, the second from the first's last state, and the
    gradient of a scalar of the result with respect to every input and the initial state."""

    def run(args, h_init, split):
        kw = dict(delta_softplus=True, return_last_state=True, method=method, chunk_size=4)
        if split is None:
            return scan.selective_scan(*args, initial_state=h_init, **kw)
        first = [x if x is None or x.ndim < 3 else x[:, :split] for x in args]
        second = [x if x is None or x.ndim < 3 else x[:, split:] for x in args]
        y1, h1 = scan.selective_scan(*first, initial_state=h_init, **kw)
        y2, h2 = scan.selective_scan(*second, initial_state=h1, **kw)
        return jnp.concatenate([y1, y2], axis=1), h2

    def loss(args, h_init, split):
        y, h = run(args, h_init, split)
        return jnp.sum(jnp.sin(y)) + jnp.sum(h**2)

    return jax.jit(
        lambda a, h, s: (run(a, h, s), jax.grad(loss, argnums=(0, 1))(a, h, s)), static_argnums=2
    )


@pytest.mark.parametrize("method", scan.methods())
def test_initial_state_splits_a_sequence_exactly(method):
    """scan(x[:, :7], h) then scan(x[:, 7:], its last state) == ref scan(x, h) in one piece,
    with the gradient with respect to every input and to h."""
    inputs = make_inputs(9, 2, 15, 8, 3, groups=2)
    args = args_of(inputs)
    h_init = jnp.asarray(np.random.default_rng(1).standard_normal((2, 8, 3)), jnp.float32)
    (y, h), grads = split_scan_and_grad(method)(args, h_init, 7)
    (y_r, h_r), grads_r = split_scan_and_grad("ref")(args, h_init, None)
    assert_close("y", y, y_r, *TOL[jnp.float32])
    assert_close("last_state", h, h_r, *TOL[jnp.float32])
    for name, g, g_r in zip(
        ARG_NAMES + ("initial_state",),
        (*grads[0], grads[1]),
        (*grads_r[0], grads_r[1]),
        strict=True,
    ):
        assert_close(
            f"d{name}", g, g_r, *grad_tol(name if name in ARG_NAMES else "A", jnp.float32, True)
        )


# Packed rows: document boundaries differ between the two rows (a row-mixing bug shows), the
# first row starts a document at t = 1 and has a length-1 document, ids are not consecutive.
PACKED_IDS = ((0, 3, 3, 3, 3, 7, 7, 7, 7, 7, 8, 9, 9), (5, 5, 5, 5, 5, 5, 5, 6, 6, 6, 6, 6, 6))


def _segments(ids):
    starts = [0] + [t for t in range(1, len(ids)) if ids[t] != ids[t - 1]]
    return list(zip(starts, starts[1:] + [len(ids)], strict=True))


@functools.cache
def packed_and_separate(method, dtype_name):
    """Jitted (y, last, grads) of one packed scan with ``seq_idx``, and of the same documents
    scanned one by one with "ref" (the first document of a row from ``initial_state``, the rest
    from zero), concatenated."""
    seq_idx = jnp.asarray(PACKED_IDS, jnp.int32)

    def packed(args, h0):
        return scan.selective_scan(
            *args,
            delta_softplus=True,
            return_last_state=True,
            method=method,
            chunk_size=4,
            initial_state=h0,
            seq_idx=seq_idx,
        )

    def separate(args, h0):
        u, delta, A, B, C, D, z, bias = args
        rows, lasts = [], []
        for r, ids in enumerate(PACKED_IDS):
            ys, h = [], None
            for k, (s, e) in enumerate(_segments(ids)):
                cut = lambda x: x[r : r + 1, s:e]
                y, h = scan.selective_scan(
                    cut(u),
                    cut(delta),
                    A,
                    cut(B),
                    cut(C),
                    D,
                    cut(z),
                    bias,
                    True,
                    True,
                    method="ref",
                    initial_state=h0[r : r + 1] if k == 0 else None,
                )
                ys.append(y)
            rows.append(jnp.concatenate(ys, axis=1))
            lasts.append(h)
        return jnp.concatenate(rows), jnp.concatenate(lasts)

    def with_grads(fn):
        def loss(args, h0, gy, gh):
            y, last = fn(args, h0)
            return jnp.sum(y.astype(jnp.float32) * gy) + jnp.sum(last * gh), (y, last)

        def run(args, h0, gy, gh):
            (_, (y, last)), grads = jax.value_and_grad(loss, (0, 1), has_aux=True)(args, h0, gy, gh)
            return y, last, grads

        return jax.jit(run)

    return with_grads(packed), with_grads(separate)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("method", scan.methods())
def test_seq_idx_equals_scanning_each_document_separately(method, dtype):
    """Packed rows with ``seq_idx`` == each document scanned alone: outputs, final state and the
    gradient of every input and of the initial state (which applies to a row's first document)."""
    inputs = make_inputs(11, 2, len(PACKED_IDS[0]), 8, 3, groups=2, dtype=dtype)
    args = args_of(inputs)
    h0 = jnp.asarray(np.random.default_rng(2).standard_normal((2, 8, 3)), jnp.float32)
    gy, gh = cotangents(inputs)
    packed, separate = packed_and_separate(method, np.dtype(dtype).name)
    y, last, (grads, dh0) = packed(args, h0, gy, gh)
    y_r, last_r, (grads_r, dh0_r) = separate(args, h0, gy, gh)
    assert_close("y", y, y_r, *TOL[dtype])
    assert_close("last_state", last, last_r, *TOL[dtype])
    assert_close("dinitial_state", dh0, dh0_r, *grad_tol("A", dtype, True))
    for name, g, g_r in zip(ARG_NAMES, grads, grads_r, strict=True):
        assert_close(f"d{name}", g, g_r, *grad_tol(name, dtype, True))


def test_seq_idx_changes_the_result_and_is_validated():
    """A boundary must matter (guards against a mask that is silently ignored), and a bad
    seq_idx raises ValueError naming it."""
    inputs = make_inputs(3, 2, 13, 8, 3)
    args = args_of(inputs)[:5]
    one_doc = scan.selective_scan(*args, seq_idx=jnp.zeros((2, 13), jnp.int32))
    np.testing.assert_array_equal(one_doc, scan.selective_scan(*args))
    two_docs = scan.selective_scan(*args, seq_idx=jnp.asarray(PACKED_IDS, jnp.int32))
    assert not np.allclose(one_doc[:, 7:], two_docs[:, 7:])
    with pytest.raises(ValueError, match="seq_idx must have shape"):
        scan.selective_scan(*args, seq_idx=jnp.zeros((2, 12), jnp.int32))
    with pytest.raises(ValueError, match="seq_idx must have an integer dtype"):
        scan.selective_scan(*args, seq_idx=jnp.zeros((2, 13), jnp.float32))


def test_selective_state_update_steps_equal_full_scan():
    """Decoding token by token from h = 0 reproduces the full scan and its last state."""
    inputs = make_inputs(11, 2, 17, 8, 4, groups=2)
    u, delta, A, B, C, D, z, bias = args_of(inputs)

    @jax.jit
    def decode(u, delta, B, C, z):
        def step(h, xs):
            x_t, dt_t, B_t, C_t, z_t = xs
            y_t, h = scan.selective_state_update(h, x_t, dt_t, A, B_t, C_t, D, z_t, bias, True)
            return h, y_t

        h0 = jnp.zeros((u.shape[0],) + A.shape, jnp.float32)
        tm = lambda x: jnp.moveaxis(x, 1, 0)
        h, ys = jax.lax.scan(step, h0, tuple(map(tm, (u, delta, B, C, z))))
        return jnp.moveaxis(ys, 0, 1), h

    y_steps, h_steps = decode(u, delta, B, C, z)
    y_full, h_full = forward("ref", True)(*args_of(inputs))
    assert_close("y", y_steps, y_full, 1e-5, 1e-5)
    assert_close("state", h_steps, h_full, 1e-5, 1e-5)


def test_selective_state_update_ungrouped_and_dtype():
    inputs = make_inputs(5, 3, 1, 8, 4, dtype=jnp.bfloat16, with_z=False, with_bias=False)
    u, delta, A, B, C, D, _, _ = args_of(inputs)
    h0 = jnp.zeros((3, 8, 4), jnp.float32)
    y, h = scan.selective_state_update(h0, u[:, 0], delta[:, 0], A, B[:, 0], C[:, 0], D)
    y_full, h_full = forward("ref", False)(u, delta, A, B, C, D)
    assert y.dtype == jnp.bfloat16 and h.dtype == jnp.float32 and y.shape == (3, 8)
    assert_close("y", y, y_full[:, 0], *TOL[jnp.bfloat16])
    assert_close("state", h, h_full, 1e-6, 1e-6)


@pytest.mark.parametrize("method", scan.methods())
def test_every_method_jits_and_vmaps_over_a_leading_axis(method):
    inputs = make_inputs(2, 1, 23, 8, 4, groups=2)
    args = args_of(inputs)
    stacked = tuple(None if a is None else jnp.stack([a, 2 * a]) for a in args)
    in_axes = (0,) * len(args)
    f = jax.jit(
        jax.vmap(
            functools.partial(
                scan.selective_scan, delta_softplus=True, method=method, chunk_size=4
            ),
            in_axes=in_axes,
        )
    )
    y = f(*stacked)
    for k in range(2):
        ref_args = tuple(None if a is None else a[k] for a in stacked)
        assert_close(f"y[{k}]", y[k], forward("ref", True)(*ref_args)[0], *TOL[jnp.float32])


def test_registry_lists_methods_and_rejects_unknown():
    assert set(scan.methods()) == {"ref", "associative", "chunked", "pallas"}
    inputs = make_inputs(0, 1, 4, 4, 2)
    with pytest.raises(
        ValueError, match=r"selective-scan method 'bogus' is not registered.*chunked"
    ):
        scan.selective_scan(*args_of(inputs), method="bogus")
    with pytest.raises(ValueError, match="already registered"):
        scan.register_backend("ref")(scan.selective_scan_ref)


_GOOD = make_inputs(0, 2, 6, 8, 4)


def _bad(**changes):
    return {**_GOOD, **changes}


# (name of the bad argument, changed inputs, regex the message must match)
BAD_SCAN_INPUTS = [
    ("u-rank", _bad(u=jnp.zeros((6, 8))), r"u must have shape \(batch, length, d_inner\)"),
    ("u-int", _bad(u=jnp.zeros((2, 6, 8), jnp.int32)), r"u must have a real floating dtype"),
    ("delta", _bad(delta=jnp.zeros((2, 5, 8))), r"delta must have shape .*\(2, 6, 8\)"),
    ("A-shape", _bad(A=jnp.zeros((4, 8))), r"A must have shape \(d_inner, d_state\) = \(8, N\)"),
    ("A-complex", _bad(A=jnp.zeros((8, 4), jnp.complex64)), r"A must be real-valued"),
    ("B-shape", _bad(B=jnp.zeros((2, 6, 5))), r"B must have shape .*\(2, 6, 4\)"),
    ("C-len", _bad(C=jnp.zeros((2, 7, 4))), r"C must have shape .*\(2, 6, 4\)"),
    (
        "B-groups",
        _bad(B=jnp.zeros((2, 6, 3, 4)), C=jnp.zeros((2, 6, 3, 4))),
        r"B has 3 groups, which must divide d_inner = 8",
    ),
    ("BC-groups", _bad(B=jnp.zeros((2, 6, 2, 4))), r"B and C must have the same number"),
    ("D", _bad(D=jnp.zeros((4,))), r"D must have shape \(d_inner,\) = \(8,\)"),
    ("z", _bad(z=jnp.zeros((2, 6, 4))), r"z must have shape \(batch, length, d_inner\)"),
    ("delta_bias", _bad(delta_bias=jnp.zeros((8, 1))), r"delta_bias must have shape \(d_inner,\)"),
    (
        "initial_state",
        dict(_GOOD, initial_state=jnp.zeros((2, 8))),
        r"initial_state must have shape \(batch, d_inner, d_state\) = \(2, 8, 4\)",
    ),
]


@pytest.mark.parametrize("name,inputs,msg", BAD_SCAN_INPUTS, ids=[b[0] for b in BAD_SCAN_INPUTS])
def test_bad_inputs_raise_value_error_naming_argument(name, inputs, msg):
    del name
    for method in scan.methods():
        with pytest.raises(ValueError, match=msg):
            scan.selective_scan(*args_of(inputs), method=method, **kwargs_of(inputs))


def test_bad_flags_raise_value_error():
    with pytest.raises(ValueError, match="delta_softplus must be a Python bool"):
        scan.selective_scan(*args_of(_GOOD), delta_softplus=1)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        scan.selective_scan(*args_of(_GOOD), method="chunked", chunk_size=0)


BAD_STEP_INPUTS = [
    (
        "state",
        dict(state=jnp.zeros((2, 8, 5))),
        r"state must have shape \(batch, d_inner, d_state\) = \(2, 8, 4\)",
    ),
    ("x", dict(x=jnp.zeros((2, 8, 1))), r"x must have shape \(batch, d_inner\)"),
    ("dt", dict(dt=jnp.zeros((2, 7))), r"dt must have shape \(batch, d_inner\) = \(2, 8\)"),
    ("B", dict(B=jnp.zeros((2, 5))), r"B must have shape \(batch, d_state\) = \(2, 4\)"),
    ("z", dict(z=jnp.zeros((8,))), r"z must have shape \(batch, d_inner\)"),
    ("dt_bias", dict(dt_bias=jnp.zeros((7,))), r"dt_bias must have shape \(d_inner,\)"),
    ("x-int", dict(x=jnp.zeros((2, 8), jnp.int32)), r"x must have a real floating dtype"),
]


@pytest.mark.parametrize("name,changes,msg", BAD_STEP_INPUTS, ids=[b[0] for b in BAD_STEP_INPUTS])
def test_bad_step_inputs_raise_value_error(name, changes, msg):
    del name
    good = dict(
        state=jnp.zeros((2, 8, 4)),
        x=jnp.zeros((2, 8)),
        dt=jnp.zeros((2, 8)),
        A=jnp.zeros((8, 4)),
        B=jnp.zeros((2, 4)),
        C=jnp.zeros((2, 4)),
        D=None,
        z=None,
        dt_bias=None,
    )
    with pytest.raises(ValueError, match=msg):
        scan.selective_state_update(**{**good, **changes})


def test_min_bytes_matches_ssm_md_worked_example():
    # SSM.md §6: 2 * 8 * 2048 * (3 * 1536 + 2 * 16) = 152,043,520 bytes (bf16, no z).
    assert scan.min_bytes(8, 2048, 1536, 16, 2) == 2 * 8 * 2048 * (3 * 1536 + 2 * 16)
    # With z: 5D + 2N. Backward adds s b L (5D + 4N) (7D with z).
    assert scan.min_bytes(1, 10, 4, 2, 4, gated=True) == 4 * 10 * (20 + 4)
    assert scan.min_bytes(1, 10, 4, 2, 4, backward=True) == 4 * 10 * (12 + 4 + 20 + 8)
