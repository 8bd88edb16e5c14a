r"""Fused selective-scan kernel in Pallas (Triton back-end on GPU, interpret mode on CPU).

Design (SSM.md §5.3-5.4; the CUDA kernel of state-spaces/mamba, ``selective_scan_fwd_kernel.cuh``,
is the model): the grid is ``(batch, d_inner / block_d)``; each program keeps its state
``h: f32[block_d, N]`` in registers and walks the sequence with a ``fori_loop`` over time, because
GPU grid programs are unordered and cannot carry a state across a grid axis. Per step it loads one
contiguous row ``u[t, :block_d]``, ``delta[t, :block_d]`` (and ``z``) plus ``B[t, :N]``,
``C[t, :N]``, and fuses, as the CUDA kernel does,

.. math::

    \Delta = \operatorname{softplus}(\delta + \delta_{bias}), \quad
    h = 2^{\Delta \cdot A\log_2 e} \odot h + (\Delta u) \otimes B_t, \quad
    y_t = (\langle h, C_t\rangle + D u_t)\,\operatorname{silu}(z_t),

so HBM traffic is the minimum of SSM.md §6, ``s·b·L·(3D + 2N)`` (``5D`` with z).

Triton constraints honoured here (SSM.md §5.3): every in-kernel array has a power-of-two size
(``block_d`` is a power of two dividing d_inner and d_inner/groups; N is zero-padded to a power of
two, which is exact because a padded state has ``A = 0, B = 0, C = 0``), no value slicing, no
scanned ``lax.scan`` inputs, and Triton ``CompilerParams`` passed explicitly because JAX 0.10.2
otherwise selects Mosaic GPU, which fails for this kernel.

Backward: a ``jax.custom_vjp`` whose backward recomputes through the pure-JAX chunked scan
(``ssm.scan_xla.selective_scan_chunked``), the option SSM.md §5.4 calls "simplest correct". A
reverse-time Pallas backward kernel is future work.

``block_d``, ``num_warps`` and ``num_stages`` are untuned defaults: no GPU was available when this
was written, only the CUDA lowering (``jax.export``, platforms=["cuda"]) was checked.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton

from ssm import scan_xla

Array = jax.Array

LOG2E = math.log2(math.e)
# Untuned defaults (see module docstring); SSM.md §5.4 suggests block_d 8-16 at batch 1.
DEFAULT_BLOCK_D = 16
DEFAULT_NUM_WARPS = 1
DEFAULT_NUM_STAGES = 2


def _pow2_block(d_inner: int, per_group: int, block_d: int) -> int:
    """Largest power of two <= block_d that divides d_inner and the channels per group, so a
    program never straddles two groups of B/C."""
    bd = 1
    while bd * 2 <= block_d and d_inner % (bd * 2) == 0 and per_group % (bd * 2) == 0:
        bd *= 2
    return bd


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _kernel(
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
    length: int,
    delta_softplus: bool,
    gated: bool,
):
    """One program: channels [j*bd, (j+1)*bd) of batch row i, all time steps.

    Refs (batch and group axes squeezed): u, dt, z, y: [L, bd]; a: [bd, N]; b, c: [L, N];
    d, bias: [bd]; h0 (initial state), h_out (last state): f32[bd, N]; keep: f32[L, 1], the
    factor on h_{t-1} (0 where a packed document starts, ``scan_xla.keep_mask``).
    """
    if gated:
        z_ref, y_ref, h_ref = rest
    else:
        z_ref = None
        y_ref, h_ref = rest
    # exp(dt*A) == exp2(dt * A*log2(e)); exp2 is the cheaper SFU instruction (as in CUDA).
    a2 = a_ref[...].astype(jnp.float32) * LOG2E
    d_skip = d_ref[...].astype(jnp.float32)
    bias = bias_ref[...].astype(jnp.float32)

    def step(t, h):
        u_t = u_ref[t, :].astype(jnp.float32)
        dt = dt_ref[t, :].astype(jnp.float32) + bias
        if delta_softplus:
            # The CUDA kernel's form; exp overflows to inf only in the discarded branch.
            dt = jnp.where(dt <= 20.0, jnp.log1p(jnp.exp(dt)), dt)
        b_t = b_ref[t, :].astype(jnp.float32)
        c_t = c_ref[t, :].astype(jnp.float32)
        h = h * keep_ref[t, :][:, None]
        h = jnp.exp2(dt[:, None] * a2) * h + (dt * u_t)[:, None] * b_t[None, :]
        y = jnp.sum(h * c_t[None, :], axis=1) + d_skip * u_t
        if gated:
            z_t = z_ref[t, :].astype(jnp.float32)
            y = y * z_t / (1.0 + jnp.exp(-z_t))
        y_ref[t, :] = y.astype(y_ref.dtype)
        return h

    h_ref[...] = lax.fori_loop(0, length, step, h0_ref[...].astype(jnp.float32))


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
    block_d=DEFAULT_BLOCK_D,
    num_warps=DEFAULT_NUM_WARPS,
    num_stages=DEFAULT_NUM_STAGES,
    initial_state=None,
    seq_idx=None,
):
    """Forward kernel only (not differentiable by itself). Shapes as ``ssm.scan.selective_scan``;
    returns (y [b, L, D] in u.dtype, last_state f32[b, D, N])."""
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    batch, length, d_inner = u.shape
    d_state = A.shape[1]
    Bg, Cg = scan_xla.as_grouped(B), scan_xla.as_grouped(C)
    groups = Bg.shape[2]
    per_group = d_inner // groups
    bd = _pow2_block(d_inner, per_group, block_d)
    n_pad = _next_pow2(d_state) - d_state
    A_k = A.astype(jnp.float32)
    if n_pad:
        A_k = jnp.pad(A_k, [(0, 0), (0, n_pad)])
        Bg = jnp.pad(Bg, [(0, 0), (0, 0), (0, 0), (0, n_pad)])
        Cg = jnp.pad(Cg, [(0, 0), (0, 0), (0, 0), (0, n_pad)])
    n_k = d_state + n_pad
    D_k = jnp.zeros((d_inner,), jnp.float32) if D is None else D.astype(jnp.float32)
    bias_k = (
        jnp.zeros((d_inner,), jnp.float32) if delta_bias is None else delta_bias.astype(jnp.float32)
    )

    h0_k = scan_xla.initial_h(initial_state, batch, d_inner, d_state)
    if n_pad:
        h0_k = jnp.pad(h0_k, [(0, 0), (0, 0), (0, n_pad)])

    keep = scan_xla.keep_mask(seq_idx)
    keep_k = (jnp.ones((batch, length), jnp.float32) if keep is None else keep)[..., None]

    sq = pl.squeezed
    state_spec = pl.BlockSpec((sq, bd, n_k), lambda i, j: (i, j, 0))
    row_spec = pl.BlockSpec((sq, length, bd), lambda i, j: (i, 0, j))
    bc_spec = pl.BlockSpec((sq, length, sq, n_k), lambda i, j: (i, 0, (j * bd) // per_group, 0))
    in_specs = [
        row_spec,  # u
        row_spec,  # delta
        pl.BlockSpec((bd, n_k), lambda i, j: (j, 0)),  # A
        bc_spec,  # B
        bc_spec,  # C
        pl.BlockSpec((bd,), lambda i, j: (j,)),  # D
        pl.BlockSpec((bd,), lambda i, j: (j,)),  # delta_bias
        state_spec,  # initial state
        pl.BlockSpec((sq, length, 1), lambda i, j: (i, 0, 0)),  # keep
    ]
    args = [u, delta, A_k, Bg, Cg, D_k, bias_k, h0_k, keep_k]
    if z is not None:
        in_specs.append(row_spec)
        args.append(z)
    kernel = functools.partial(
        _kernel, length=length, delta_softplus=delta_softplus, gated=z is not None
    )
    y, h = pl.pallas_call(
        kernel,
        out_shape=(
            jax.ShapeDtypeStruct((batch, length, d_inner), u.dtype),
            jax.ShapeDtypeStruct((batch, d_inner, n_k), jnp.float32),
        ),
        grid=(batch, d_inner // bd),
        in_specs=in_specs,
        out_specs=(row_spec, state_spec),
        interpret=interpret,
        compiler_params=pltriton.CompilerParams(num_warps=num_warps, num_stages=num_stages),
        name="selective_scan_fwd",
    )(*args)
    return y, h[..., :d_state]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _scan_vjp(
    static, interpret, chunk_size, delta_softplus, u, delta, A, B, C, D, z, delta_bias, h0, seq_idx
):
    block_d, num_warps, num_stages = static
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
        block_d=block_d,
        num_warps=num_warps,
        num_stages=num_stages,
        initial_state=h0,
        seq_idx=seq_idx,
    )


def _scan_fwd(static, interpret, chunk_size, delta_softplus, *operands):
    out = _scan_vjp(static, interpret, chunk_size, delta_softplus, *operands)
    return out, operands


def _scan_bwd(static, interpret, chunk_size, delta_softplus, operands, cotangents):
    """Recompute through the chunked scan (same math, f32) and pull back (dy, dlast_state)."""
    del static, interpret

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
    block_d=DEFAULT_BLOCK_D,
    num_warps=DEFAULT_NUM_WARPS,
    num_stages=DEFAULT_NUM_STAGES,
):
    """Differentiable fused selective scan: Pallas forward, recomputing chunked backward.

    Signature of the ``ssm.scan`` back-end registry; use it through
    ``ssm.scan.selective_scan(..., method="pallas")``, which validates the inputs.

    Args:
      u, delta, A, B, C, D, z, delta_bias, delta_softplus: see ``ssm.scan.selective_scan``.
      chunk_size: chunk length of the recomputing backward (``ssm.scan`` "chunked").
      initial_state: optional f32[b, D, N] starting state (zeros when None).
      seq_idx: optional int[b, L] packed-document ids; h resets to 0 where it changes.
      interpret: run the kernel in Pallas interpret mode (CPU); ``None`` means iff the default
        backend is the CPU.
      block_d: channels per program (rounded down to a power of two dividing d_inner and the
        channels per group).
      num_warps, num_stages: Triton compiler parameters.

    Returns:
      (y [b, L, D] in u.dtype, last_state f32[b, D, N]).
    """
    if interpret is None:
        interpret = jax.default_backend() == "cpu"
    static = (int(block_d), int(num_warps), int(num_stages))
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


__all__ = ["selective_scan_pallas", "selective_scan_pallas_fwd"]
