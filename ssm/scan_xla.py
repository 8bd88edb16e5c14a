r"""The pure-JAX selective scan: input validation, the shared f32 pieces, and the XLA back-ends.

The dispatcher :mod:`ssm.scan` (``selective_scan(..., method=...)``) registers the back-ends
defined here next to the fused Pallas kernel of :mod:`ssm.pallas_scan`, which reuses this
module's helpers and recomputes its backward pass through :func:`selective_scan_chunked`. This
module imports neither, so the dependency points one way: scan -> {pallas_scan, scan_xla},
pallas_scan -> scan_xla. Math and shapes: see :mod:`ssm.scan`.

Back-ends here (uniform signature, see ``BackendFn`` in :mod:`ssm.scan`):

* :func:`selective_scan_ref`: a plain ``lax.scan`` over time; the executable specification.
* :func:`selective_scan_associative`: ``lax.associative_scan`` of the first-order recurrence;
  materialises f32[b, L, D, N] several times (SSM.md §5.6).
* :func:`selective_scan_chunked`: ``lax.scan`` over chunks of ``chunk_size`` steps carrying h,
  associative scan inside each chunk, rematerialised (``jax.checkpoint``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


# --------------------------------------------------------------------------------------------
# Shared pieces: validation, fp32 preparation, one recurrence step, output epilogue.
# --------------------------------------------------------------------------------------------


class ScanDims(NamedTuple):
    """Static sizes of one selective-scan call."""

    batch: int
    length: int
    d_inner: int
    d_state: int
    groups: int


def is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def check_array(name: str, x: Any, expected: tuple, what: str) -> None:
    """Raise a ValueError naming ``name`` unless ``x`` has shape ``expected`` and a real float
    dtype. ``expected`` holds ints; ``what`` is its symbolic spelling, e.g. ``(batch, length,
    d_inner)``."""
    shape = tuple(getattr(x, "shape", ()))
    if shape != tuple(expected):
        raise ValueError(f"{name} must have shape {what} = {tuple(expected)}, got {shape}")
    if not is_float(x):
        raise ValueError(
            f"{name} must have a real floating dtype (float32, bfloat16, float16), "
            f"got {jnp.result_type(x)}"
        )


def check_bc(name: str, x: Any, batch: int, length: int | None, d_inner: int, d_state: int):
    """Validate a B or C operand; return its number of groups."""
    shape = tuple(getattr(x, "shape", ()))
    lead = (batch,) if length is None else (batch, length)
    lead_s = "(batch" if length is None else "(batch, length"
    ok3 = len(shape) == len(lead) + 1 and shape == lead + (d_state,)
    ok4 = len(shape) == len(lead) + 2 and shape[: len(lead)] == lead and shape[-1] == d_state
    if not (ok3 or ok4):
        raise ValueError(
            f"{name} must have shape {lead_s}, d_state) = {lead + (d_state,)} or "
            f"{lead_s}, groups, d_state) = {lead + ('G', d_state)}, got {shape}"
        )
    groups = 1 if ok3 else shape[-2]
    if groups < 1 or d_inner % groups:
        raise ValueError(
            f"{name} has {groups} groups, which must divide d_inner = {d_inner} (shape {shape})"
        )
    if not is_float(x):
        raise ValueError(f"{name} must have a real floating dtype, got {jnp.result_type(x)}")
    return groups


def validate_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> ScanDims:
    """Check every selective-scan operand; raise ValueError naming the argument and the
    expected shape. Runs on static shapes only, so it fails before any compilation."""
    u_shape = tuple(getattr(u, "shape", ()))
    if len(u_shape) != 3:
        raise ValueError(f"u must have shape (batch, length, d_inner), got {u_shape}")
    batch, length, d_inner = u_shape
    check_array("u", u, u_shape, "(batch, length, d_inner)")
    check_array("delta", delta, u_shape, "(batch, length, d_inner)")
    a_shape = tuple(getattr(A, "shape", ()))
    if len(a_shape) != 2 or a_shape[0] != d_inner:
        raise ValueError(f"A must have shape (d_inner, d_state) = ({d_inner}, N), got {a_shape}")
    d_state = a_shape[1]
    if jnp.issubdtype(jnp.result_type(A), jnp.complexfloating):
        raise ValueError("A must be real-valued (complex A is not supported), got complex dtype")
    check_array("A", A, a_shape, "(d_inner, d_state)")
    gb = check_bc("B", B, batch, length, d_inner, d_state)
    gc = check_bc("C", C, batch, length, d_inner, d_state)
    if gb != gc:
        raise ValueError(f"B and C must have the same number of groups, got {gb} and {gc}")
    if D is not None:
        check_array("D", D, (d_inner,), "(d_inner,)")
    if z is not None:
        check_array("z", z, u_shape, "(batch, length, d_inner)")
    if delta_bias is not None:
        check_array("delta_bias", delta_bias, (d_inner,), "(d_inner,)")
    return ScanDims(batch, length, d_inner, d_state, gb)


def check_flag(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(
            f"{name} must be a Python bool (it changes the traced program), got {value!r}"
        )


def softplus(x: Array) -> Array:
    """``log(1 + exp(x))``, as the CUDA kernel's ``x <= 20 ? log1p(exp(x)) : x`` but without the
    overflow of ``exp`` for large x (identical to fp32 rounding)."""
    return jax.nn.softplus(x)


def prepare_delta(delta: Array, delta_bias: Array | None, delta_softplus: bool) -> Array:
    """f32 ``softplus(delta + delta_bias)`` (steps 1-3 of SSM.md §1.2); same shape as delta."""
    dt = delta.astype(jnp.float32)
    if delta_bias is not None:
        dt = dt + delta_bias.astype(jnp.float32)
    if delta_softplus:
        dt = softplus(dt)
    return dt


def as_grouped(x: Array) -> Array:
    """B or C as f32[..., G, N]: the ungrouped [..., N] layout becomes G = 1."""
    return x if x.ndim == 4 else x[..., None, :]


class Operands32(NamedTuple):
    """The f32 operands every XLA back-end starts from: u, dt f32[b, L, D] (dt biased and
    softplussed), A f32[D, N], B, C f32[b, L, G, N]."""

    u: Array
    dt: Array
    A: Array
    B: Array
    C: Array


def to_f32(u, delta, A, B, C, delta_bias, delta_softplus) -> Operands32:
    """Steps 1-3 of SSM.md §1.2 and the f32 upcast of every operand."""
    return Operands32(
        u=u.astype(jnp.float32),
        dt=prepare_delta(delta, delta_bias, delta_softplus),
        A=A.astype(jnp.float32),
        B=as_grouped(B).astype(jnp.float32),
        C=as_grouped(C).astype(jnp.float32),
    )


def expand_groups(x: Array, d_inner: int) -> Array:
    """[..., G, N] -> [..., D, N] (or [..., 1, N] when G = 1, which broadcasts over D)."""
    groups = x.shape[-2]
    if groups == 1:
        return x
    return jnp.repeat(x, d_inner // groups, axis=-2)


def ssm_step(h: Array, u_t: Array, dt_t: Array, A: Array, B_t: Array, C_t: Array):
    """One step of the recurrence in f32.

    Args:
      h: f32[..., D, N] state h_{t-1}.
      u_t, dt_t: f32[..., D] input and (already biased/softplussed) step size.
      A: f32[D, N].
      B_t, C_t: f32[..., D or 1, N].

    Returns:
      (h_t f32[..., D, N], y_t f32[..., D]) with y_t = <C_t, h_t> (no D-skip, no gate).
    """
    dA = jnp.exp(dt_t[..., None] * A)
    h = dA * h + (dt_t * u_t)[..., None] * B_t
    return h, jnp.sum(h * C_t, axis=-1)


def epilogue(y: Array, u: Array, D: Array | None, z: Array | None, out_dtype) -> Array:
    """Steps 7-9 of SSM.md §1.2: ``(y + D u) * silu(z)`` in f32, cast to ``out_dtype``."""
    if D is not None:
        y = y + u.astype(jnp.float32) * D.astype(jnp.float32)
    if z is not None:
        zf = z.astype(jnp.float32)
        y = y * (zf * jax.nn.sigmoid(zf))
    return y.astype(out_dtype)


# --------------------------------------------------------------------------------------------
# XLA back-ends. Uniform signature:
#   fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, interpret, *,
#      initial_state=None, seq_idx=None) -> (y [b, L, D] in u.dtype, last_state f32[b, D, N])
# B and C arrive as [b, L, N] or grouped [b, L, G, N].
# --------------------------------------------------------------------------------------------


def selective_scan_ref(
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
):
    """Sequential reference: ``lax.scan`` over time carrying f32[b, D, N] (SSM.md §5.1)."""
    del chunk_size, interpret
    d_inner = u.shape[-1]
    u32, dt, A32, Bx, Cx = to_f32(u, delta, A, B, C, delta_bias, delta_softplus)

    keep = keep_mask(seq_idx)
    keep = jnp.ones(u.shape[:2], jnp.float32) if keep is None else keep

    def step(h, xs):
        u_t, dt_t, B_t, C_t, keep_t = xs
        h = keep_t[:, None, None] * h  # a new packed document starts from h = 0
        return ssm_step(h, u_t, dt_t, A32, expand_groups(B_t, d_inner), expand_groups(C_t, d_inner))

    time_major = lambda x: jnp.moveaxis(x, 1, 0)
    h0 = initial_h(initial_state, u.shape[0], d_inner, A.shape[1])
    h_last, ys = lax.scan(step, h0, tuple(map(time_major, (u32, dt, Bx, Cx, keep))))
    return epilogue(jnp.moveaxis(ys, 0, 1), u, D, z, u.dtype), h_last


def initial_h(initial_state, batch, d_inner, d_state):
    """f32[b, D, N] starting state: zeros (upstream) or the given ``initial_state``."""
    if initial_state is None:
        return jnp.zeros((batch, d_inner, d_state), jnp.float32)
    return initial_state.astype(jnp.float32)


def check_seq_idx(seq_idx: Any, batch: int, length: int) -> None:
    """Raise a ValueError unless ``seq_idx`` is None or an integer array of shape (batch, length)."""
    if seq_idx is None:
        return
    shape = tuple(getattr(seq_idx, "shape", ()))
    if shape != (batch, length):
        raise ValueError(
            f"seq_idx must have shape (batch, length) = {(batch, length)}, got {shape}"
        )
    if not jnp.issubdtype(jnp.result_type(seq_idx), jnp.integer):
        raise ValueError(f"seq_idx must have an integer dtype, got {jnp.result_type(seq_idx)}")


def keep_mask(seq_idx: Array | None) -> Array | None:
    """f32[b, L] factor on h_{t-1} for packed sequences: 0 where ``seq_idx[:, t]`` differs from
    ``seq_idx[:, t-1]`` (a new document starts from h = 0, as mamba_ssm's ``seq_idx``), else 1.
    Position 0 keeps its factor 1, so ``initial_state`` applies to the first document only.
    None (no packing) stays None so the unpacked programs are unchanged."""
    if seq_idx is None:
        return None
    same = seq_idx[:, 1:] == seq_idx[:, :-1]
    first = jnp.ones(seq_idx.shape[:1] + (1,), bool)
    return lax.stop_gradient(jnp.concatenate([first, same], axis=1).astype(jnp.float32))


def _combine(left, right):
    """Associative operator of the first-order recurrence (a, b) -> h = a h_prev + b:
    ``(a_l, b_l) o (a_r, b_r) = (a_r a_l, a_r b_l + b_r)``."""
    a_l, b_l = left
    a_r, b_r = right
    return a_r * a_l, a_r * b_l + b_r


def _discretise(u32, dt, A32, Bx, d_inner, keep=None):
    """(A_bar, B_bar u), each f32[b, T, D, N], for a block of time steps; ``keep`` f32[b, T]
    (see :func:`keep_mask`) zeroes A_bar where a packed document starts."""
    dA = jnp.exp(dt[..., None] * A32)
    if keep is not None:
        dA = dA * keep[:, :, None, None]
    dBu = (dt * u32)[..., None] * expand_groups(Bx, d_inner)
    return dA, dBu


def selective_scan_associative(
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
):
    """``lax.associative_scan`` over the whole length (SSM.md §5.1 ``assoc``)."""
    del chunk_size, interpret
    d_inner = u.shape[-1]
    x = to_f32(u, delta, A, B, C, delta_bias, delta_softplus)
    dA, dBu = _discretise(x.u, x.dt, x.A, x.B, d_inner, keep_mask(seq_idx))
    if initial_state is not None:  # h_0 = A_bar_0 h_init + B_bar_0 u_0
        dBu = dBu.at[:, 0].add(dA[:, 0] * initial_state.astype(jnp.float32))
    _, h = lax.associative_scan(_combine, (dA, dBu), axis=1)
    y = jnp.sum(h * expand_groups(x.C, d_inner), axis=-1)
    return epilogue(y, u, D, z, u.dtype), h[:, -1]


def selective_scan_chunked(
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
):
    """Two-level scan: ``lax.scan`` over ``ceil(L / chunk_size)`` chunks carrying h, and an
    associative scan inside each chunk started from the carried h (SSM.md §5.1 ``chunked``;
    folding ``A_bar_0 h_in`` into the first input is the same as the fix-up
    ``h = h_local + cumprod(A_bar) h_in``).

    The length is padded to a multiple of the chunk with ``delta = 0`` *after* softplus, i.e.
    ``A_bar = 1, B_bar u = 0``, which leaves the state unchanged. The chunk body is wrapped in
    ``jax.checkpoint`` so that reverse mode stores only the per-chunk carries.
    """
    del interpret
    batch, length, d_inner = u.shape
    T = max(1, min(int(chunk_size), length))
    n_chunks = -(-length // T)
    pad = n_chunks * T - length
    u32, dt, A32, Bx, Cx = to_f32(u, delta, A, B, C, delta_bias, delta_softplus)
    keep = keep_mask(seq_idx)
    keep = jnp.ones((batch, length), jnp.float32) if keep is None else keep

    def chunks(x, fill=0.0):  # [b, L, ...] -> [n_chunks, b, T, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2), constant_values=fill)
        x = x.reshape((batch, n_chunks, T) + x.shape[2:])
        return jnp.moveaxis(x, 1, 0)

    @jax.checkpoint
    def body(h, xs):
        u_c, dt_c, B_c, C_c, keep_c = xs
        dA, dBu = _discretise(u_c, dt_c, A32, B_c, d_inner, keep_c)
        dBu = dBu.at[:, 0].add(dA[:, 0] * h)
        _, hs = lax.associative_scan(_combine, (dA, dBu), axis=1)
        y = jnp.sum(hs * expand_groups(C_c, d_inner), axis=-1)
        return hs[:, -1], y

    h0 = initial_h(initial_state, batch, d_inner, A.shape[1])
    h_last, ys = lax.scan(body, h0, (*map(chunks, (u32, dt, Bx, Cx)), chunks(keep, fill=1.0)))
    y = jnp.moveaxis(ys, 0, 1).reshape(batch, n_chunks * T, d_inner)[:, :length]
    return epilogue(y, u, D, z, u.dtype), h_last
