r"""Selective scan (Mamba's S6 recurrence) with interchangeable back-ends.

One public function, :func:`selective_scan`, with the semantics of mamba_ssm's
``selective_scan_ref`` (state-spaces/mamba @ e9594ce,
``mamba_ssm/ops/selective_scan_interface.py``) in a (batch, length, channels) layout, and the
single-token decode step :func:`selective_state_update`.

Math (Mamba, arXiv 2312.00752, Alg. 2 and Eq. 2a/2b/4; SSM.md §1.2), always in float32:

.. math::

    \Delta &\leftarrow \operatorname{softplus}(\Delta + \Delta_{bias}) \quad\text{(when asked)} \\
    \bar A_t &= \exp(\Delta_t A) \quad\text{(ZOH)}, \qquad
    \bar B_t u_t = \Delta_t B_t u_t \quad\text{(Euler, as upstream)} \\
    h_t &= \bar A_t \odot h_{t-1} + \bar B_t u_t, \qquad h_{-1} = 0 \\
    y_t &= \langle C_t, h_t \rangle + D u_t, \qquad y_t \leftarrow y_t\,\operatorname{silu}(z_t)

Shapes (``b`` batch, ``L`` length, ``D`` d_inner, ``N`` d_state, ``G`` groups)::

    u, delta, z : [b, L, D]   any float dtype; y is returned in u.dtype
    A           : [D, N]      real (negative for a stable recurrence)
    B, C        : [b, L, N] or grouped [b, L, G, N] (channel d uses group d // (D // G))
    D, delta_bias : [D]
    last_state  : f32[b, D, N]

Back-ends (``method=``), all jit-able, vmap-able and differentiable with respect to every input:

* ``"ref"``: a plain ``lax.scan`` over time; the executable specification.
* ``"associative"``: ``lax.associative_scan`` of the first-order recurrence; materialises
  f32[b, L, D, N] several times (SSM.md §5.6).
* ``"chunked"``: ``lax.scan`` over chunks of ``chunk_size`` steps carrying h, associative scan
  inside each chunk, rematerialised (``jax.checkpoint``) so neither the forward nor the backward
  pass holds more than f32[b, chunk_size, D, N] plus the per-chunk carries f32[b, L/T, D, N]/T.
* ``"pallas"``: the fused kernel of :mod:`ssm.pallas_scan`.

The XLA back-ends, validation and shared f32 pieces live in :mod:`ssm.scan_xla` (which
:mod:`ssm.pallas_scan` also builds on); this module is the dispatcher: the back-end registry,
:func:`selective_scan` and the decode step.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

import harness
from ssm import pallas_scan, scan_xla
from ssm.scan_xla import (
    ScanDims,
    selective_scan_associative,
    selective_scan_chunked,
    selective_scan_ref,
    validate_scan_inputs,
)

Array = jax.Array


# --------------------------------------------------------------------------------------------
# Back-ends. Uniform signature:
#   fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, interpret, *,
#      initial_state=None, seq_idx=None) -> (y [b, L, D] in u.dtype, last_state f32[b, D, N])
# B and C arrive as [b, L, N] or grouped [b, L, G, N].
# --------------------------------------------------------------------------------------------

ScanFn = Callable[..., tuple[Array, Array]]
BACKENDS: harness.Registry[ScanFn] = harness.Registry("selective-scan method")
BACKENDS.add("ref", selective_scan_ref)
BACKENDS.add("associative", selective_scan_associative)
BACKENDS.add("chunked", selective_scan_chunked)
BACKENDS.add("pallas", pallas_scan.selective_scan_pallas)


def register_backend(name: str) -> Callable[[ScanFn], ScanFn]:
    """Decorator adding a back-end to :data:`BACKENDS`; duplicate names raise ValueError."""
    return BACKENDS.register(name)


def methods() -> tuple[str, ...]:
    """Names of the registered back-ends."""
    return BACKENDS.names()


def get_backend(method: str) -> ScanFn:
    """Registered back-end by name; unknown names raise ConfigError (a ValueError) listing the
    valid ones."""
    return BACKENDS.get(method)


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------


def selective_scan(
    u: Array,
    delta: Array,
    A: Array,
    B: Array,
    C: Array,
    D: Array | None = None,
    z: Array | None = None,
    delta_bias: Array | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    method: str = "ref",
    chunk_size: int = 64,
    interpret: bool | None = None,
    initial_state: Array | None = None,
    seq_idx: Array | None = None,
):
    r"""Selective scan ``y = SSM(A, B, C, \Delta)(u)`` of Mamba (arXiv 2312.00752, Alg. 2).

    Same semantics as mamba_ssm's ``selective_scan_ref`` in BLD layout (see module docstring).

    Args:
      u: [batch, length, d_inner] input, any float dtype (sets the output dtype).
      delta: [batch, length, d_inner] step size before bias/softplus.
      A: [d_inner, d_state] real state matrix (diagonal per channel).
      B, C: [batch, length, d_state] or grouped [batch, length, groups, d_state].
      D: optional [d_inner] skip connection.
      z: optional [batch, length, d_inner] gate; the output is multiplied by ``silu(z)``.
      delta_bias: optional [d_inner], added to delta before the softplus.
      delta_softplus: apply ``softplus`` to ``delta + delta_bias``.
      return_last_state: also return the final state.
      method: back-end name, one of :func:`methods` ("ref", "associative", "chunked", "pallas").
      chunk_size: time steps per chunk for "chunked" (and the Pallas backward, which recomputes
        through "chunked").
      interpret: Pallas only; ``None`` means interpret mode iff the default backend is the CPU.
      initial_state: optional f32[batch, d_inner, d_state] state h_{-1} (upstream starts from
        zero and has no such argument; SSM.md §5.1 asks for an optional h0). Splitting a sequence
        and passing the first part's last state gives the same result as one scan.
      seq_idx: optional int[batch, length] document ids of packed sequences (mamba_ssm's
        ``seq_idx``): h_{t-1} is replaced by 0 wherever ``seq_idx[:, t] != seq_idx[:, t-1]``, so
        each document is scanned as if alone; ``initial_state`` applies to the first document
        of each row only. Not differentiable (integer).

    Returns:
      y: [batch, length, d_inner] in ``u.dtype``; and, when ``return_last_state``,
      last_state: f32[batch, d_inner, d_state].

    Raises:
      ValueError: unknown ``method``, wrong shapes or dtypes (naming the argument and the
        expected shape), or non-bool flags / non-positive ``chunk_size``.
    """
    fn = get_backend(method)
    dims = scan_xla.validate_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if initial_state is not None:
        scan_xla.check_array(
            "initial_state",
            initial_state,
            (dims.batch, dims.d_inner, dims.d_state),
            "(batch, d_inner, d_state)",
        )
    scan_xla.check_seq_idx(seq_idx, dims.batch, dims.length)
    scan_xla.check_flag("delta_softplus", delta_softplus)
    scan_xla.check_flag("return_last_state", return_last_state)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    y, last = fn(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus,
        chunk_size,
        interpret,
        initial_state=initial_state,
        seq_idx=seq_idx,
    )
    return (y, last) if return_last_state else y


def selective_state_update(
    state: Array,
    x: Array,
    dt: Array,
    A: Array,
    B: Array,
    C: Array,
    D: Array | None = None,
    z: Array | None = None,
    dt_bias: Array | None = None,
    dt_softplus: bool = False,
):
    """One decode step of the selective SSM (mamba_ssm ``selective_state_update_ref``).

    Args:
      state: f32[batch, d_inner, d_state] state h_{t-1} (other float dtypes are upcast).
      x, dt: [batch, d_inner] input and step size of this token.
      A: [d_inner, d_state].
      B, C: [batch, d_state] or grouped [batch, groups, d_state].
      D: optional [d_inner]; z: optional [batch, d_inner]; dt_bias: optional [d_inner].
      dt_softplus: apply softplus to ``dt + dt_bias``.

    Returns:
      (y [batch, d_inner] in x.dtype, new_state f32[batch, d_inner, d_state]). Iterating this over
      a sequence from a zero state equals :func:`selective_scan` with ``return_last_state``.
    """
    x_shape = tuple(getattr(x, "shape", ()))
    if len(x_shape) != 2:
        raise ValueError(f"x must have shape (batch, d_inner), got {x_shape}")
    batch, d_inner = x_shape
    scan_xla.check_array("x", x, x_shape, "(batch, d_inner)")
    scan_xla.check_array("dt", dt, x_shape, "(batch, d_inner)")
    a_shape = tuple(getattr(A, "shape", ()))
    if len(a_shape) != 2 or a_shape[0] != d_inner:
        raise ValueError(f"A must have shape (d_inner, d_state) = ({d_inner}, N), got {a_shape}")
    scan_xla.check_array("A", A, a_shape, "(d_inner, d_state)")
    d_state = a_shape[1]
    scan_xla.check_array("state", state, (batch, d_inner, d_state), "(batch, d_inner, d_state)")
    gb = scan_xla.check_bc("B", B, batch, None, d_inner, d_state)
    gc = scan_xla.check_bc("C", C, batch, None, d_inner, d_state)
    if gb != gc:
        raise ValueError(f"B and C must have the same number of groups, got {gb} and {gc}")
    if D is not None:
        scan_xla.check_array("D", D, (d_inner,), "(d_inner,)")
    if z is not None:
        scan_xla.check_array("z", z, x_shape, "(batch, d_inner)")
    if dt_bias is not None:
        scan_xla.check_array("dt_bias", dt_bias, (d_inner,), "(d_inner,)")
    scan_xla.check_flag("dt_softplus", dt_softplus)

    dt32 = scan_xla.prepare_delta(dt, dt_bias, dt_softplus)
    Bx = scan_xla.expand_groups(B.reshape(batch, gb, d_state).astype(jnp.float32), d_inner)
    Cx = scan_xla.expand_groups(C.reshape(batch, gc, d_state).astype(jnp.float32), d_inner)
    h, y = scan_xla.ssm_step(
        state.astype(jnp.float32), x.astype(jnp.float32), dt32, A.astype(jnp.float32), Bx, Cx
    )
    return scan_xla.epilogue(y, x, D, z, x.dtype), h


def min_bytes(
    batch: int,
    length: int,
    d_inner: int,
    d_state: int,
    itemsize: int,
    gated: bool = False,
    backward: bool = False,
) -> int:
    """Minimum HBM bytes a fused kernel must move (SSM.md §6).

    Forward: read u, delta (and z), B, C; write y: ``s b L (3D + 2N)``, or ``s b L (5D + 2N)``
    with z (the CUDA kernel writes out and out_z). With ``backward`` the fused backward's
    minimum is added (this codebase's extension of §6): read u, delta, dy (and z), B, C; write
    du, ddelta (and dz), dB, dC: ``s b L (5D + 4N)``, or ``(7D + 4N)`` with z.
    """
    s = itemsize
    fwd = s * batch * length * ((5 if gated else 3) * d_inner + 2 * d_state)
    if not backward:
        return fwd
    return fwd + s * batch * length * ((7 if gated else 5) * d_inner + 4 * d_state)


__all__ = [
    "ScanDims",
    "get_backend",
    "methods",
    "min_bytes",
    "register_backend",
    "selective_scan",
    "selective_scan_associative",
    "selective_scan_chunked",
    "selective_scan_ref",
    "selective_state_update",
    "validate_scan_inputs",
]
