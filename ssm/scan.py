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
* ``"pallas"``: the fused kernel of :mod:`ssm.pallas_scan` (imported lazily).
"""

from __future__ import annotations

from collections.abc import Callable
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


def _is_float(x: Any) -> bool:
    return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _check_array(name: str, x: Any, expected: tuple, what: str) -> None:
    """Raise a ValueError naming ``name`` unless ``x`` has shape ``expected`` and a real float
    dtype. ``expected`` holds ints; ``what`` is its symbolic spelling, e.g. ``(batch, length,
    d_inner)``."""
    shape = tuple(getattr(x, "shape", ()))
    if shape != tuple(expected):
        raise ValueError(f"{name} must have shape {what} = {tuple(expected)}, got {shape}")
    if not _is_float(x):
        raise ValueError(
            f"{name} must have a real floating dtype (float32, bfloat16, float16), "
            f"got {jnp.result_type(x)}"
        )


def _check_bc(name: str, x: Any, batch: int, length: int | None, d_inner: int, d_state: int):
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
    if not _is_float(x):
        raise ValueError(f"{name} must have a real floating dtype, got {jnp.result_type(x)}")
    return groups


def validate_scan_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> ScanDims:
    """Check every selective-scan operand; raise ValueError naming the argument and the
    expected shape. Runs on static shapes only, so it fails before any compilation."""
    u_shape = tuple(getattr(u, "shape", ()))
    if len(u_shape) != 3:
        raise ValueError(f"u must have shape (batch, length, d_inner), got {u_shape}")
    batch, length, d_inner = u_shape
    _check_array("u", u, u_shape, "(batch, length, d_inner)")
    _check_array("delta", delta, u_shape, "(batch, length, d_inner)")
    a_shape = tuple(getattr(A, "shape", ()))
    if len(a_shape) != 2 or a_shape[0] != d_inner:
        raise ValueError(f"A must have shape (d_inner, d_state) = ({d_inner}, N), got {a_shape}")
    d_state = a_shape[1]
    if jnp.issubdtype(jnp.result_type(A), jnp.complexfloating):
        raise ValueError("A must be real-valued (complex A is not supported), got complex dtype")
    _check_array("A", A, a_shape, "(d_inner, d_state)")
    gb = _check_bc("B", B, batch, length, d_inner, d_state)
    gc = _check_bc("C", C, batch, length, d_inner, d_state)
    if gb != gc:
        raise ValueError(f"B and C must have the same number of groups, got {gb} and {gc}")
    if D is not None:
        _check_array("D", D, (d_inner,), "(d_inner,)")
    if z is not None:
        _check_array("z", z, u_shape, "(batch, length, d_inner)")
    if delta_bias is not None:
        _check_array("delta_bias", delta_bias, (d_inner,), "(d_inner,)")
    return ScanDims(batch, length, d_inner, d_state, gb)


def _check_flag(name: str, value: Any) -> None:
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
# Back-ends. Uniform signature:
#   fn(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk_size, interpret, *,
#      initial_state=None) -> (y [b, L, D] in u.dtype, last_state f32[b, D, N])
# B and C arrive grouped, [b, L, G, N].
# --------------------------------------------------------------------------------------------

ScanFn = Callable[..., tuple[Array, Array]]
_BACKENDS: dict[str, ScanFn] = {}


def register_backend(name: str) -> Callable[[ScanFn], ScanFn]:
    """Decorator adding a back-end to the registry; duplicate names raise ValueError."""

    def deco(fn: ScanFn) -> ScanFn:
        if name in _BACKENDS:
            raise ValueError(f"scan back-end {name!r} is already registered")
        _BACKENDS[name] = fn
        return fn

    return deco


def methods() -> tuple[str, ...]:
    """Names of the registered back-ends."""
    return tuple(_BACKENDS)


def get_backend(method: str) -> ScanFn:
    """Registered back-end by name; unknown names raise ValueError listing the valid ones."""
    try:
        return _BACKENDS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown selective-scan method {method!r}; registered methods: {sorted(_BACKENDS)}"
        ) from None


@register_backend("ref")
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
):
    """Sequential reference: ``lax.scan`` over time carrying f32[b, D, N] (SSM.md §5.1)."""
    del chunk_size, interpret
    d_inner = u.shape[-1]
    dt = prepare_delta(delta, delta_bias, delta_softplus)
    A32 = A.astype(jnp.float32)
    Bx = as_grouped(B).astype(jnp.float32)
    Cx = as_grouped(C).astype(jnp.float32)
    u32 = u.astype(jnp.float32)

    def step(h, xs):
        u_t, dt_t, B_t, C_t = xs
        return ssm_step(h, u_t, dt_t, A32, expand_groups(B_t, d_inner), expand_groups(C_t, d_inner))

    time_major = lambda x: jnp.moveaxis(x, 1, 0)
    h0 = initial_h(initial_state, u.shape[0], d_inner, A.shape[1])
    h_last, ys = lax.scan(step, h0, tuple(map(time_major, (u32, dt, Bx, Cx))))
    return epilogue(jnp.moveaxis(ys, 0, 1), u, D, z, u.dtype), h_last


def initial_h(initial_state, batch, d_inner, d_state):
    """f32[b, D, N] starting state: zeros (upstream) or the given ``initial_state``."""
    if initial_state is None:
        return jnp.zeros((batch, d_inner, d_state), jnp.float32)
    return initial_state.astype(jnp.float32)


def _combine(left, right):
    """Associative operator of the first-order recurrence (a, b) -> h = a h_prev + b:
    ``(a_l, b_l) o (a_r, b_r) = (a_r a_l, a_r b_l + b_r)``."""
    a_l, b_l = left
    a_r, b_r = right
    return a_r * a_l, a_r * b_l + b_r


def _discretise(u32, dt, A32, Bx, d_inner):
    """(A_bar, B_bar u), each f32[b, T, D, N], for a block of time steps."""
    dA = jnp.exp(dt[..., None] * A32)
    dBu = (dt * u32)[..., None] * expand_groups(Bx, d_inner)
    return dA, dBu


@register_backend("associative")
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
):
    """``lax.associative_scan`` over the whole length (SSM.md §5.1 ``assoc``)."""
    del chunk_size, interpret
    d_inner = u.shape[-1]
    dt = prepare_delta(delta, delta_bias, delta_softplus)
    Bx = as_grouped(B).astype(jnp.float32)
    Cx = as_grouped(C).astype(jnp.float32)
    dA, dBu = _discretise(u.astype(jnp.float32), dt, A.astype(jnp.float32), Bx, d_inner)
    if initial_state is not None:  # h_0 = A_bar_0 h_init + B_bar_0 u_0
        dBu = dBu.at[:, 0].add(dA[:, 0] * initial_state.astype(jnp.float32))
    _, h = lax.associative_scan(_combine, (dA, dBu), axis=1)
    y = jnp.sum(h * expand_groups(Cx, d_inner), axis=-1)
    return epilogue(y, u, D, z, u.dtype), h[:, -1]


@register_backend("chunked")
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
    A32 = A.astype(jnp.float32)
    dt = prepare_delta(delta, delta_bias, delta_softplus)
    u32 = u.astype(jnp.float32)
    Bx = as_grouped(B).astype(jnp.float32)
    Cx = as_grouped(C).astype(jnp.float32)

    def chunks(x):  # [b, L, ...] -> [n_chunks, b, T, ...]
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        x = x.reshape((batch, n_chunks, T) + x.shape[2:])
        return jnp.moveaxis(x, 1, 0)

    @jax.checkpoint
    def body(h, xs):
        u_c, dt_c, B_c, C_c = xs
        dA, dBu = _discretise(u_c, dt_c, A32, B_c, d_inner)
        dBu = dBu.at[:, 0].add(dA[:, 0] * h)
        _, hs = lax.associative_scan(_combine, (dA, dBu), axis=1)
        y = jnp.sum(hs * expand_groups(C_c, d_inner), axis=-1)
        return hs[:, -1], y

    h0 = initial_h(initial_state, batch, d_inner, A.shape[1])
    h_last, ys = lax.scan(body, h0, tuple(map(chunks, (u32, dt, Bx, Cx))))
    y = jnp.moveaxis(ys, 0, 1).reshape(batch, n_chunks * T, d_inner)[:, :length]
    return epilogue(y, u, D, z, u.dtype), h_last


def _pallas_backend(*args, **kwargs):
    """Lazy import so that ``ssm.scan`` does not pull in Pallas unless asked."""
    from ssm import pallas_scan

    return pallas_scan.selective_scan_pallas(*args, **kwargs)


register_backend("pallas")(_pallas_backend)


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

    Returns:
      y: [batch, length, d_inner] in ``u.dtype``; and, when ``return_last_state``,
      last_state: f32[batch, d_inner, d_state].

    Raises:
      ValueError: unknown ``method``, wrong shapes or dtypes (naming the argument and the
        expected shape), or non-bool flags / non-positive ``chunk_size``.
    """
    fn = get_backend(method)
    dims = validate_scan_inputs(u, delta, A, B, C, D, z, delta_bias)
    if initial_state is not None:
        _check_array(
            "initial_state",
            initial_state,
            (dims.batch, dims.d_inner, dims.d_state),
            "(batch, d_inner, d_state)",
        )
    _check_flag("delta_softplus", delta_softplus)
    _check_flag("return_last_state", return_last_state)
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
    _check_array("x", x, x_shape, "(batch, d_inner)")
    _check_array("dt", dt, x_shape, "(batch, d_inner)")
    a_shape = tuple(getattr(A, "shape", ()))
    if len(a_shape) != 2 or a_shape[0] != d_inner:
        raise ValueError(f"A must have shape (d_inner, d_state) = ({d_inner}, N), got {a_shape}")
    _check_array("A", A, a_shape, "(d_inner, d_state)")
    d_state = a_shape[1]
    _check_array("state", state, (batch, d_inner, d_state), "(batch, d_inner, d_state)")
    gb = _check_bc("B", B, batch, None, d_inner, d_state)
    gc = _check_bc("C", C, batch, None, d_inner, d_state)
    if gb != gc:
        raise ValueError(f"B and C must have the same number of groups, got {gb} and {gc}")
    if D is not None:
        _check_array("D", D, (d_inner,), "(d_inner,)")
    if z is not None:
        _check_array("z", z, x_shape, "(batch, d_inner)")
    if dt_bias is not None:
        _check_array("dt_bias", dt_bias, (d_inner,), "(d_inner,)")
    _check_flag("dt_softplus", dt_softplus)

    dt32 = prepare_delta(dt, dt_bias, dt_softplus)
    Bx = expand_groups(B.reshape(batch, gb, d_state).astype(jnp.float32), d_inner)
    Cx = expand_groups(C.reshape(batch, gc, d_state).astype(jnp.float32), d_inner)
    h, y = ssm_step(
        state.astype(jnp.float32), x.astype(jnp.float32), dt32, A.astype(jnp.float32), Bx, Cx
    )
    return epilogue(y, x, D, z, x.dtype), h


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
