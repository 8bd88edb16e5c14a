r"""Fused selective-scan kernels in Pallas (Triton back-end on GPU, interpret mode on CPU).

Design (SSM.md §5.3-5.4; the CUDA kernel of state-spaces/mamba, ``selective_scan_fwd_kernel.cuh``,
is the model). A program owns channels ``[j*bd, (j+1)*bd)`` of batch row i and time steps
``[c*T, (c+1)*T)``, keeps ``h: f32[bd, N]`` in registers and walks its T steps with a
``fori_loop`` whose body is ``unroll`` steps unrolled by hand. Per step it loads one contiguous
row ``u[t, :bd]``, ``delta[t, :bd]`` (and ``z``) plus ``B[t, :N]``, ``C[t, :N]``, and fuses, as
the CUDA kernel does,

.. math::

    \Delta = \operatorname{softplus}(\delta + \delta_{bias}), \quad
    h = 2^{\Delta \cdot A\log_2 e} \odot h + (\Delta u) \otimes B_t, \quad
    y_t = (\langle h, C_t\rangle + D u_t)\,\operatorname{silu}(z_t).

GPU grid programs are unordered, so a state cannot be carried across a grid axis. Splitting L
over the grid (grid ``(b, D/bd, L/T)``) therefore uses the exact two-pass scheme of SSM.md §5.4:
(1) a state pass: each chunk's end state from zero and its decay ``prod exp(dt A)``; (2) an XLA
``lax.scan`` over the ``L/T`` chunk carries (f32[b, L/T, D, N], small); (3) an output pass that
re-runs each chunk from its true entry state and writes y. This costs 2x the exps and reads the
inputs twice, in exchange for ``L/T`` times more programs (at B=8, L=2048, D=1536 the one-pass
grid has 768 one-warp programs, ~5.8 per SM of an H100). With ``chunk=None`` (or T >= L) only
pass (3) runs: HBM traffic is then the minimum ``s·b·L·(3D + 2N)`` (``4D`` with z). Launch
parameters come from :data:`TUNING`, a checked-in table (heuristic, not measured), else
:func:`pick_config`.

Triton constraints honoured here (SSM.md §5.3): every in-kernel array has a power-of-two size
(``block_d`` is a power of two dividing d_inner and d_inner/groups; N is zero-padded to a power of
two, which is exact because a padded state has ``A = 0, B = 0, C = 0``; L is padded to a multiple
of T and padded steps use dt = 0), no value slicing, no scanned ``lax.scan`` inputs, and Triton
``CompilerParams`` passed explicitly because JAX 0.10.2 otherwise selects Mosaic GPU, which fails
for this kernel.

Backward (``jax.custom_vjp``, :func:`selective_scan_pallas_bwd`), grid (b, D/bd, L/T) with a
short T (:data:`BWD_CONFIG`): (1) the forward state pass saves each chunk's entry state
(f32[b, L/T, D, N], T times smaller than the full state) after an XLA scan over chunk carries;
(2) a reverse chunk-adjoint kernel gives each chunk's outgoing adjoint from a zero end adjoint,
and a reverse XLA scan turns those into the adjoint arriving at each chunk's end (and dh0);
(3) the gradient kernel recomputes the chunk's T states from its entry state in registers (a
Python-unrolled loop: no Ā inversion, SSM.md §5.4) and walks back, writing du, ddelta, dz, dB/dC
rows summed over its channels, and partial sums of dA, dD, ddelta_bias that XLA adds up. The
recompute through the chunked XLA scan stays as ``backward="xla"`` (the reference).

Not verified: PTX compilation and speed (no GPU was available; only the CUDA lowering through
``jax.export(platforms=["cuda"])`` and the Triton IR it carries are checked in the tests).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from ssm import scan_xla

Array = jax.Array

LOG2E = math.log2(math.e)


def _pow2_block(d_inner: int, per_group: int, block_d: int) -> int:
    """Largest power of two <= block_d that divides d_inner and the channels per group, so a
    program never straddles two groups of B/C."""
    bd = 1
    while bd * 2 <= block_d and d_inner % (bd * 2) == 0 and per_group % (bd * 2) == 0:
        bd *= 2
    return bd


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class KernelConfig(NamedTuple):
    """Launch parameters of the chunk-parallel forward.

    ``block_d`` channels per program (rounded to a power of two dividing d_inner and the
    channels per group), ``chunk`` time steps per program (``None``: the whole length, one
    pass), ``unroll`` time steps per hand-unrolled loop body, and Triton's ``num_warps`` /
    ``num_stages``."""

    block_d: int = 16
    chunk: int | None = 256
    unroll: int = 4
    num_warps: int = 1
    num_stages: int = 2


# Block sizes per (batch, length, d_inner, d_state), bf16 Mamba grid of benchmarks/gpu_suite.py.
# HEURISTIC, NOT MEASURED (no GPU in the session that wrote it): each entry targets >= ~16
# one-warp programs per SM of a 132-SM H100 (b * D/block_d * L/chunk >= 2048) with chunks of
# >= 128 steps so the chunk-state pass stays small. Replace entries with measured winners.
TUNING: dict[tuple[int, int, int, int], KernelConfig] = {
    (1, 512, 1536, 16): KernelConfig(block_d=8, chunk=128),
    (1, 2048, 1536, 16): KernelConfig(block_d=8, chunk=128),
    (1, 8192, 1536, 16): KernelConfig(block_d=8, chunk=256),
    (8, 512, 1536, 16): KernelConfig(block_d=8, chunk=128),
    (8, 2048, 1536, 16): KernelConfig(block_d=16, chunk=256),
    (8, 8192, 1536, 16): KernelConfig(block_d=16, chunk=512),
    (1, 2048, 2048, 16): KernelConfig(block_d=8, chunk=128),
    (8, 2048, 2048, 16): KernelConfig(block_d=16, chunk=256),
}
TARGET_PROGRAMS = 2048


def pick_config(batch: int, length: int, d_inner: int, d_state: int) -> KernelConfig:
    """The :data:`TUNING` entry of this shape, else the largest power-of-two chunk (>= 64) that
    gives ``TARGET_PROGRAMS`` programs, or one pass when the (batch, channel) grid alone does."""
    if (batch, length, d_inner, d_state) in TUNING:
        return TUNING[(batch, length, d_inner, d_state)]
    base = KernelConfig()
    programs = batch * max(1, d_inner // base.block_d)
    if programs >= TARGET_PROGRAMS or length <= 64:
        return base._replace(chunk=None)
    chunk = _next_pow2(length)
    while chunk > 64 and programs * -(-length // chunk) < TARGET_PROGRAMS:
        chunk //= 2
    return base._replace(chunk=chunk)


def _time_loop(n_steps: int, unroll: int, step, carry):
    """``fori_loop`` over ``n_steps`` whose body runs ``unroll`` consecutive steps, unrolled by
    hand (Pallas-Triton keeps a ``fori_loop`` rolled; the unrolled body lets Triton overlap the
    next steps' loads with this step's exps). ``n_steps`` must be a multiple of ``unroll``."""

    def body(k, carry):
        for s in range(unroll):
            carry = step(k * unroll + s, carry)
        return carry

    return lax.fori_loop(0, n_steps // unroll, body, carry)


def _chunk_kernel(
    u_ref,
    dt_ref,
    a_ref,
    b_ref,
    c_ref,
    d_ref,
    bias_ref,
    h0_ref,
    keep_ref,
    *rest,
    chunk: int,
    unroll: int,
    length: int,
    delta_softplus: bool,
    gated: bool,
    emit_y: bool,
):
    """One program: channels [j*bd, (j+1)*bd) of batch row i, time steps [c*T, (c+1)*T).

    Refs (batch/group/chunk axes squeezed): u, dt, z, y: [T, bd]; a: [bd, N]; b, c: [T, N];
    d, bias: [bd]; h0: f32[bd, N], the state entering the chunk (zeros in the state pass);
    keep: f32[T, 1] (``scan_xla.keep_mask``).

    ``emit_y`` (output pass): writes y and h_out, the chunk's end state. Otherwise (state pass):
    writes the chunk's end state from h0 and its decay ``prod_t keep_t exp(dt_t A)``, so that
    ``h_end = decay * h_in + h_local`` (the chunk-state scan of SSM.md §5.4).
    Steps past ``length`` (padding of the last chunk) use dt = 0 and leave h unchanged.
    """
    if emit_y:
        z_ref, y_ref, h_ref = rest if gated else (None, *rest)
    else:
        h_ref, decay_ref = rest
    # exp(dt*A) == exp2(dt * A*log2(e)); exp2 is the cheaper SFU instruction (as in CUDA).
    a2 = a_ref[...].astype(jnp.float32) * LOG2E
    d_skip = d_ref[...].astype(jnp.float32)
    bias = bias_ref[...].astype(jnp.float32)
    t0 = pl.program_id(2) * chunk

    def step(t, carry):
        h, dt_sum, keep_prod = carry
        u_t = u_ref[t, :].astype(jnp.float32)
        dt = dt_ref[t, :].astype(jnp.float32) + bias
        if delta_softplus:
            # The CUDA kernel's form; exp overflows to inf only in the discarded branch.
            dt = jnp.where(dt <= 20.0, jnp.log1p(jnp.exp(dt)), dt)
        dt = jnp.where(t0 + t < length, dt, 0.0)
        keep = keep_ref[t, :]
        b_t = b_ref[t, :].astype(jnp.float32)
        h = jnp.exp2(dt[:, None] * a2) * (h * keep[:, None]) + (dt * u_t)[:, None] * b_t[None, :]
        if emit_y:
            c_t = c_ref[t, :].astype(jnp.float32)
            y = jnp.sum(h * c_t[None, :], axis=1) + d_skip * u_t
            if gated:
                z_t = z_ref[t, :].astype(jnp.float32)
                y = y * z_t / (1.0 + jnp.exp(-z_t))
            y_ref[t, :] = y.astype(y_ref.dtype)
        return h, dt_sum + dt, keep_prod * keep

    # The state pass starts from zero by definition; not reading h0 saves a b·(L/T)·D·N load.
    h0 = h0_ref[...].astype(jnp.float32) if emit_y else jnp.zeros(h0_ref.shape, jnp.float32)
    carry = (h0, jnp.zeros_like(bias), jnp.ones((1,), jnp.float32))
    h, dt_sum, keep_prod = _time_loop(chunk, unroll, step, carry)
    h_ref[...] = h
    if not emit_y:
        decay_ref[...] = jnp.exp2(dt_sum[:, None] * a2) * keep_prod[:, None]


class _Prepared(NamedTuple):
    """Kernel operands after padding: N to a power of two, L to a multiple of the chunk."""

    args: list
    n_k: int
    length_p: int
    n_chunks: int
    per_group: int


def _prepare(u, delta, A, B, C, D, z, delta_bias, seq_idx, chunk):
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    Bg, Cg = scan_xla.as_grouped(B), scan_xla.as_grouped(C)
    n_pad = _next_pow2(d_state) - d_state
    n_chunks = -(-length // chunk)
    l_pad = n_chunks * chunk - length

    def pad(x, axis, n, fill=0.0):
        widths = [(0, n) if a == axis else (0, 0) for a in range(x.ndim)]
        return jnp.pad(x, widths, constant_values=fill) if n else x

    keep = scan_xla.keep_mask(seq_idx)
    keep = jnp.ones((batch, length), jnp.float32) if keep is None else keep
    rows = [pad(x, 1, l_pad) for x in (u, delta)]
    bc = [pad(pad(x, 3, n_pad), 1, l_pad) for x in (Bg, Cg)]
    f32 = lambda x: jnp.zeros((d_inner,), jnp.float32) if x is None else x.astype(jnp.float32)
    args = [*rows, pad(A.astype(jnp.float32), 1, n_pad), *bc, f32(D), f32(delta_bias)]
    args.append(pad(keep, 1, l_pad, fill=1.0)[..., None])  # padding keeps h (dt = 0 there)
    if z is not None:
        args.append(pad(z, 1, l_pad))
    return _Prepared(args, d_state + n_pad, length + l_pad, n_chunks, d_inner // Bg.shape[2])


def _launch(
    prep: _Prepared, h_chunks, *, cfg, bd, length, delta_softplus, emit_y, interpret, dtype
):
    """One ``pallas_call`` over the grid (batch, d_inner / bd, n_chunks); ``h_chunks`` is the
    f32[b, n_chunks, D, N_k] state entering each chunk."""
    u, delta, A_k, Bg, Cg, D_k, bias_k, keep_k, *z = prep.args
    batch, _, d_inner = u.shape
    T, n_k, per_group = cfg.chunk, prep.n_k, prep.per_group
    sq = pl.squeezed
    state_spec = pl.BlockSpec((sq, sq, bd, n_k), lambda i, j, c: (i, c, j, 0))
    row_spec = pl.BlockSpec((sq, T, bd), lambda i, j, c: (i, c, j))
    bc_spec = pl.BlockSpec((sq, T, sq, n_k), lambda i, j, c: (i, c, (j * bd) // per_group, 0))
    vec_spec = pl.BlockSpec((bd,), lambda i, j, c: (j,))
    in_specs = [row_spec, row_spec, pl.BlockSpec((bd, n_k), lambda i, j, c: (j, 0))]
    in_specs += [bc_spec, bc_spec, vec_spec, vec_spec, state_spec]
    in_specs.append(pl.BlockSpec((sq, T, 1), lambda i, j, c: (i, c, 0)))
    args = [u, delta, A_k, Bg, Cg, D_k, bias_k, h_chunks, keep_k]
    state_shape = jax.ShapeDtypeStruct(h_chunks.shape, jnp.float32)
    if emit_y:
        in_specs += [row_spec] * len(z)
        args += z
        out_shape = (jax.ShapeDtypeStruct((batch, prep.length_p, d_inner), dtype), state_shape)
        out_specs = (row_spec, state_spec)
    else:
        out_shape, out_specs = (state_shape, state_shape), (state_spec, state_spec)
    kernel = functools.partial(
        _chunk_kernel,
        chunk=T,
        unroll=cfg.unroll,
        length=length,
        delta_softplus=delta_softplus,
        gated=bool(z),
        emit_y=emit_y,
    )
    return pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(batch, d_inner // bd, prep.n_chunks),
        in_specs=in_specs,
        out_specs=out_specs,
        interpret=interpret,
        compiler_params=pltriton.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages),
        name="selective_scan_fwd" if emit_y else "selective_scan_chunk_states",
    )(*args)


def _chunk_entry_states(h_local, decay, h0):
    """Exact scan over chunk carries: ``h_in[0] = h0``, ``h_in[c+1] = decay[c] h_in[c] +
    h_local[c]`` (f32[b, n_chunks, D, N]; a tiny XLA ``lax.scan`` over n_chunks)."""

    def step(h, xs):
        h_loc, dec = xs
        return dec * h + h_loc, h

    _, h_in = lax.scan(step, h0, (jnp.moveaxis(h_local, 1, 0), jnp.moveaxis(decay, 1, 0)))
    return jnp.moveaxis(h_in, 0, 1)


def selective_scan_pallas_fwd(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    *,
    interpret=None,
    config: KernelConfig | None = None,
    initial_state=None,
    seq_idx=None,
):
    """Forward kernels only (not differentiable by themselves). Shapes as
    ``ssm.scan.selective_scan``; returns (y [b, L, D] in u.dtype, last_state f32[b, D, N]).

    Chunk-parallel (SSM.md §5.4 "exact two-pass chunked scheme") when the config's chunk is
    shorter than L: (1) state pass, grid (b, D/bd, L/T): each chunk's end state from zero and
    its decay; (2) an XLA scan over the L/T chunk carries; (3) output pass, same grid: each
    chunk again from its true entry state, writing y. With one chunk only pass (3) runs."""
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    cfg = pick_config(batch, length, d_inner, d_state) if config is None else config
    unroll = max(1, int(cfg.unroll))
    chunk = -(-(length if cfg.chunk is None else min(cfg.chunk, length)) // unroll) * unroll
    cfg = cfg._replace(chunk=chunk, unroll=unroll)
    groups = scan_xla.as_grouped(B).shape[2]
    bd = _pow2_block(d_inner, d_inner // groups, cfg.block_d)
    prep = _prepare(u, delta, A, B, C, D, z, delta_bias, seq_idx, chunk)
    h0 = scan_xla.initial_h(initial_state, batch, d_inner, d_state)
    h0 = jnp.pad(h0, [(0, 0), (0, 0), (0, prep.n_k - d_state)])
    launch = functools.partial(
        _launch,
        prep,
        cfg=cfg,
        bd=bd,
        length=length,
        delta_softplus=delta_softplus,
        interpret=interpret,
        dtype=u.dtype,
    )
    if prep.n_chunks == 1:
        h_in = h0[:, None]
    else:
        zeros = jnp.zeros((batch, prep.n_chunks, d_inner, prep.n_k), jnp.float32)
        h_local, decay = launch(zeros, emit_y=False)
        h_in = _chunk_entry_states(h_local, decay, h0)
    y, h_out = launch(h_in, emit_y=True)
    return y[:, :length], h_out[:, -1, :, :d_state]


# --------------------------------------------------------------------------------------------
# Backward: chunk adjoints (reverse), a scan over chunk carries, and a fused gradient kernel.
# --------------------------------------------------------------------------------------------

# Backward launch parameters (HEURISTIC, NOT MEASURED): the gradient kernel unrolls its chunk of
# ``chunk`` steps twice in Python (recompute forward, then reverse) and keeps the chunk's
# states in registers, so the chunk is short; entry states are saved every ``chunk`` steps.
BWD_CONFIG = KernelConfig(block_d=16, chunk=16, unroll=1, num_warps=4, num_stages=1)


def _step_size(delta_t, bias, delta_softplus, valid):
    """(dt, d dt / d delta) of one step, f32[bd]; 0 on padded steps."""
    x = delta_t.astype(jnp.float32) + bias
    if delta_softplus:
        dt = jnp.where(x <= 20.0, jnp.log1p(jnp.exp(x)), x)
        dsp = jnp.where(x <= 20.0, 1.0 - jnp.exp(-dt), 1.0)  # sigmoid(x) = 1 - exp(-softplus)
    else:
        dt, dsp = x, jnp.ones_like(x)
    return jnp.where(valid, dt, 0.0), jnp.where(valid, dsp, 0.0)


def _gated_dy(dy_t, z_ref, t, gated):
    """(dy * silu(z), sigmoid(z), z) in f32, or (dy, None, None) without a gate."""
    dy = dy_t.astype(jnp.float32)
    if not gated:
        return dy, None, None
    z = z_ref[t, :].astype(jnp.float32)
    sig = 1.0 / (1.0 + jnp.exp(-z))
    return dy * z * sig, sig, z


def _adjoint_kernel(
    dt_ref, a_ref, c_ref, bias_ref, keep_ref, dy_ref, *rest, chunk, length, delta_softplus, gated
):
    """Reverse pass of one chunk from a zero adjoint at its end: writes ``g``, the adjoint that
    leaves the chunk towards h_{start-1}: ``lam_t = C_t dy'_t + Abar_{t+1} lam_{t+1}``,
    ``g = keep_s Abar_s lam_s`` (SSM.md §5.4 backward). Refs as :func:`_chunk_kernel`."""
    z_ref, g_ref = rest if gated else (None, *rest)
    a2 = a_ref[...].astype(jnp.float32) * LOG2E
    bias = bias_ref[...].astype(jnp.float32)
    t0 = pl.program_id(2) * chunk

    def step(k, g):
        t = chunk - 1 - k
        dt, _ = _step_size(dt_ref[t, :], bias, delta_softplus, t0 + t < length)
        dyp, _, _ = _gated_dy(dy_ref[t, :], z_ref, t, gated)
        lam = g + dyp[:, None] * c_ref[t, :].astype(jnp.float32)[None, :]
        return keep_ref[t, :][:, None] * jnp.exp2(dt[:, None] * a2) * lam

    g_ref[...] = lax.fori_loop(0, chunk, step, jnp.zeros(g_ref.shape, jnp.float32))


def _grad_kernel(
    u_ref, dt_ref, a_ref, b_ref, c_ref, d_ref, bias_ref, h_ref, keep_ref, dy_ref, g_ref, *rest,
    chunk, length, delta_softplus, gated,
):  # fmt: skip
    """Gradients of one chunk: recompute its states from the saved entry state ``h`` (Python
    loop, kept in registers), then walk back from ``g`` (the adjoint arriving from later
    chunks). Writes du, ddelta (and dz) rows, dB/dC rows summed over this program's channels,
    and this program's partial sums of dA [bd, N], dD and ddelta_bias [bd]."""
    if gated:
        z_ref, du_ref, ddt_ref, dz_ref, db_ref, dc_ref, da_ref, dd_ref, dbias_ref = rest
    else:
        z_ref = dz_ref = None
        du_ref, ddt_ref, db_ref, dc_ref, da_ref, dd_ref, dbias_ref = rest
    a = a_ref[...].astype(jnp.float32)
    d_skip = d_ref[...].astype(jnp.float32)
    bias = bias_ref[...].astype(jnp.float32)
    t0 = pl.program_id(2) * chunk
    h, saved = h_ref[...], []
    for t in range(chunk):  # forward recompute; no state leaves the registers
        dt, dsp = _step_size(dt_ref[t, :], bias, delta_softplus, t0 + t < length)
        u_t, b_t = u_ref[t, :].astype(jnp.float32), b_ref[t, :].astype(jnp.float32)
        decay = jnp.exp2(dt[:, None] * (a * LOG2E))
        h_prev = h * keep_ref[t, :][:, None]
        h = decay * h_prev + (dt * u_t)[:, None] * b_t[None, :]
        saved.append((dt, dsp, u_t, b_t, decay, h_prev, h))
    lam, da = g_ref[...], jnp.zeros_like(a)
    dd, dbias = jnp.zeros_like(d_skip), jnp.zeros_like(bias)
    for t in reversed(range(chunk)):
        dt, dsp, u_t, b_t, decay, h_prev, h = saved[t]
        c_t = c_ref[t, :].astype(jnp.float32)
        dyp, sig, z = _gated_dy(dy_ref[t, :], z_ref, t, gated)
        if gated:
            y = jnp.sum(h * c_t[None, :], axis=1) + d_skip * u_t
            dsilu = sig * (1.0 + z * (1.0 - sig))
            dz_ref[t, :] = (dy_ref[t, :].astype(jnp.float32) * y * dsilu).astype(dz_ref.dtype)
        lam = lam + dyp[:, None] * c_t[None, :]
        dc_ref[t, :] = jnp.sum(dyp[:, None] * h, axis=0)
        db_ref[t, :] = jnp.sum(lam * (dt * u_t)[:, None], axis=0)
        lam_b = jnp.sum(lam * b_t[None, :], axis=1)
        du_ref[t, :] = (lam_b * dt + d_skip * dyp).astype(du_ref.dtype)
        dx = (jnp.sum(lam * a * decay * h_prev, axis=1) + u_t * lam_b) * dsp
        ddt_ref[t, :] = dx.astype(ddt_ref.dtype)
        da = da + lam * dt[:, None] * decay * h_prev
        dd, dbias = dd + dyp * u_t, dbias + dx
        lam = keep_ref[t, :][:, None] * decay * lam
    da_ref[...], dd_ref[...], dbias_ref[...] = da, dd, dbias


def _chunk_exit_adjoints(g_local, decay, dlast):
    """Reverse scan over chunk carries: the adjoint arriving at chunk c's last state,
    ``g_in[n-1] = dlast``, ``g_in[c] = g_local[c+1] + decay[c+1] g_in[c+1]``; and the adjoint of
    the initial state ``g_local[0] + decay[0] g_in[0]``. f32[b, n_chunks, D, N]."""

    def step(g, xs):
        g_loc, dec = xs
        return g_loc + dec * g, g

    dh0, g_in = lax.scan(
        step, dlast, (jnp.moveaxis(g_local, 1, 0), jnp.moveaxis(decay, 1, 0)), reverse=True
    )
    return jnp.moveaxis(g_in, 0, 1), dh0


def _bwd_specs(bd, T, n_k, per_group):
    sq = pl.squeezed
    return dict(
        row=pl.BlockSpec((sq, T, bd), lambda i, j, c: (i, c, j)),
        a=pl.BlockSpec((bd, n_k), lambda i, j, c: (j, 0)),
        bc=pl.BlockSpec((sq, T, sq, n_k), lambda i, j, c: (i, c, (j * bd) // per_group, 0)),
        vec=pl.BlockSpec((bd,), lambda i, j, c: (j,)),
        state=pl.BlockSpec((sq, sq, bd, n_k), lambda i, j, c: (i, c, j, 0)),
        keep=pl.BlockSpec((sq, T, 1), lambda i, j, c: (i, c, 0)),
        rows_n=pl.BlockSpec((sq, sq, T, n_k), lambda i, j, c: (i, j, c, 0)),
        chunk_vec=pl.BlockSpec((sq, sq, bd), lambda i, j, c: (i, c, j)),
    )


def _assemble_bc(part, ref, length, d_state):
    """Per-program dB or dC rows f32[b, D/bd, Lp, N_k] -> the cotangent of B or C."""
    batch, n_prog = part.shape[:2]
    groups = scan_xla.as_grouped(ref).shape[2]
    g = part.reshape((batch, groups, n_prog // groups) + part.shape[2:]).sum(axis=2)
    g = jnp.moveaxis(g, 1, 2)[:, :length, :, :d_state]
    return (g if ref.ndim == 4 else g[:, :, 0]).astype(ref.dtype)


def selective_scan_pallas_bwd(operands, cotangents, *, delta_softplus, interpret, config=None):
    """Fused backward: cotangents of (u, delta, A, B, C, D, z, delta_bias, initial_state,
    seq_idx) given (dy, dlast_state). Four launches over the grid (b, D/bd, L/T): the forward
    state pass (entry states every T steps), the reverse chunk-adjoint pass, two tiny XLA scans
    over the chunk carries, and the gradient kernel; no f32[b, L, D, N] tensor is formed."""
    u, delta, A, B, C, D, z, delta_bias, h0, seq_idx = operands
    dy, dlast = cotangents
    cfg = BWD_CONFIG if config is None else config
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    T = min(cfg.chunk, length)
    cfg = cfg._replace(chunk=T, unroll=1)
    prep = _prepare(u, delta, A, B, C, D, z, delta_bias, seq_idx, T)
    bd = _pow2_block(d_inner, prep.per_group, cfg.block_d)
    n_k, nc = prep.n_k, prep.n_chunks
    pad_n = lambda x: jnp.pad(x, [(0, 0), (0, 0), (0, n_k - d_state)])
    h_init = pad_n(scan_xla.initial_h(h0, batch, d_inner, d_state))
    zeros = jnp.zeros((batch, nc, d_inner, n_k), jnp.float32)
    launch = functools.partial(
        _launch, prep, cfg=cfg, bd=bd, length=length, delta_softplus=delta_softplus,
        interpret=interpret, dtype=u.dtype,
    )  # fmt: skip
    h_local, decay = launch(zeros, emit_y=False)
    h_in = _chunk_entry_states(h_local, decay, h_init)
    u_p, delta_p, A_k, Bg, Cg, D_k, bias_k, keep_k, *z_p = prep.args
    dy_p = jnp.pad(dy, [(0, 0), (0, prep.length_p - length), (0, 0)])
    sp = _bwd_specs(bd, T, n_k, prep.per_group)
    grid = (batch, d_inner // bd, nc)
    params = pltriton.CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    common = dict(chunk=T, length=length, delta_softplus=delta_softplus, gated=bool(z_p))
    g_local = pl.pallas_call(
        functools.partial(_adjoint_kernel, **common),
        out_shape=jax.ShapeDtypeStruct(zeros.shape, jnp.float32),
        grid=grid,
        in_specs=[sp["row"], sp["a"], sp["bc"], sp["vec"], sp["keep"], sp["row"]]
        + [sp["row"]] * len(z_p),
        out_specs=sp["state"],
        interpret=interpret,
        compiler_params=params,
        name="selective_scan_bwd_chunk_adjoints",
    )(delta_p, A_k, Cg, bias_k, keep_k, dy_p, *z_p)
    g_in, dh0 = _chunk_exit_adjoints(g_local, decay, pad_n(dlast.astype(jnp.float32)))
    row = lambda dt: jax.ShapeDtypeStruct(u_p.shape, dt)
    rows_n = jax.ShapeDtypeStruct((batch, d_inner // bd, prep.length_p, n_k), jnp.float32)
    chunk_vec = jax.ShapeDtypeStruct((batch, nc, d_inner), jnp.float32)
    out_shape = [row(u.dtype), row(delta.dtype)] + [row(x.dtype) for x in z_p]
    out_shape += [rows_n, rows_n, jax.ShapeDtypeStruct(zeros.shape, jnp.float32)]
    out_shape += [chunk_vec, chunk_vec]
    outs = pl.pallas_call(
        functools.partial(_grad_kernel, **common),
        out_shape=tuple(out_shape),
        grid=grid,
        in_specs=[sp["row"], sp["row"], sp["a"], sp["bc"], sp["bc"], sp["vec"], sp["vec"]]
        + [sp["state"], sp["keep"], sp["row"], sp["state"]]
        + [sp["row"]] * len(z_p),
        out_specs=tuple(
            [sp["row"]] * (2 + len(z_p))
            + [sp["rows_n"], sp["rows_n"], sp["state"], sp["chunk_vec"], sp["chunk_vec"]]
        ),
        interpret=interpret,
        compiler_params=params,
        name="selective_scan_bwd",
    )(u_p, delta_p, A_k, Bg, Cg, D_k, bias_k, h_in, keep_k, dy_p, g_in, *z_p)
    du, ddelta, *dz, db, dc, da, dd, dbias = outs
    vec = lambda x, ref: None if ref is None else x.sum(axis=(0, 1)).astype(ref.dtype)
    return (
        du[:, :length],
        ddelta[:, :length],
        da.sum(axis=(0, 1))[:, :d_state].astype(A.dtype),
        _assemble_bc(db, B, length, d_state),
        _assemble_bc(dc, C, length, d_state),
        vec(dd, D),
        dz[0][:, :length] if dz else None,
        vec(dbias, delta_bias),
        None if h0 is None else dh0[..., :d_state].astype(h0.dtype),
        None if seq_idx is None else np.zeros(seq_idx.shape, jax.dtypes.float0),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _scan_vjp(
    static, interpret, chunk_size, delta_softplus, u, delta, A, B, C, D, z, delta_bias, h0, seq_idx
):
    config = static[0]
    return selective_scan_pallas_fwd(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus,
        interpret=interpret,
        config=config,
        initial_state=h0,
        seq_idx=seq_idx,
    )


def _scan_fwd(static, interpret, chunk_size, delta_softplus, *operands):
    out = _scan_vjp(static, interpret, chunk_size, delta_softplus, *operands)
    return out, operands


def _scan_bwd(static, interpret, chunk_size, delta_softplus, operands, cotangents):
    """The fused Pallas backward, or (``backward="xla"``) a recompute through the chunked XLA
    scan (same math, f32) pulled back by ``jax.vjp``."""
    _, backward, bwd_config = static
    if backward == "pallas":
        return selective_scan_pallas_bwd(
            operands,
            cotangents,
            delta_softplus=delta_softplus,
            interpret=interpret,
            config=bwd_config,
        )

    def chunked(*ops):
        *ops, h0, seq_idx = ops
        return scan_xla.selective_scan_chunked(
            *ops,
            delta_softplus=delta_softplus,
            chunk_size=chunk_size,
            initial_state=h0,
            seq_idx=seq_idx,
        )

    _, pullback = jax.vjp(chunked, *operands)
    return pullback(cotangents)


_scan_vjp.defvjp(_scan_fwd, _scan_bwd)


def selective_scan_pallas(
    u,
    delta,
    A,
    B,
    C,
    D=None,
    z=None,
    delta_bias=None,
    delta_softplus=False,
    chunk_size=64,
    interpret=None,
    *,
    initial_state=None,
    seq_idx=None,
    config: KernelConfig | None = None,
    backward: str = "pallas",
    bwd_config: KernelConfig | None = None,
):
    """Differentiable fused selective scan: Pallas forward and backward kernels.

    Signature of the ``ssm.scan`` back-end registry; use it through
    ``ssm.scan.selective_scan(..., method="pallas")``, which validates the inputs.

    Args:
      u, delta, A, B, C, D, z, delta_bias, delta_softplus: see ``ssm.scan.selective_scan``.
      chunk_size: chunk length of the recomputing backward (``ssm.scan`` "chunked").
      initial_state: optional f32[b, D, N] starting state (zeros when None).
      seq_idx: optional int[b, L] packed-document ids; h resets to 0 where it changes.
      interpret: run the kernel in Pallas interpret mode (CPU); ``None`` means iff the default
        backend is the CPU.
      config: launch parameters (:class:`KernelConfig`); ``None`` picks :func:`pick_config`.
      backward: "pallas" (the fused backward kernels, :data:`BWD_CONFIG`) or "xla" (recompute
        through ``scan_xla.selective_scan_chunked``, the reference backward).
      bwd_config: launch parameters of the Pallas backward (``block_d``, ``chunk``: steps
        between saved entry states, ``num_warps``, ``num_stages``); ``None``: :data:`BWD_CONFIG`.

    Returns:
      (y [b, L, D] in u.dtype, last_state f32[b, D, N]).
    """
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    if backward not in ("pallas", "xla"):
        raise ValueError(f"backward must be 'pallas' or 'xla', got {backward!r}")
    static = (config, backward, bwd_config)
    return _scan_vjp(
        static,
        bool(interpret),
        int(chunk_size),
        bool(delta_softplus),
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        initial_state,
        seq_idx,
    )


__all__ = [
    "KernelConfig",
    "TUNING",
    "pick_config",
    "selective_scan_pallas",
    "selective_scan_pallas_fwd",
]
