"""Mamba-2 mixer and the state-space-dual (SSD) algorithm (Dao & Gu 2024, arXiv 2405.21060).

SSD layer (Mamba-2 §6, eq. (16)): per head h, A is a scalar times the identity, so with
``a_t = dt_t A_h`` and inputs ``x_t`` (headdim P), ``B_t, C_t`` (d_state N, shared by the heads of
a group)::

    H_t = exp(a_t) H_{t-1} + (dt_t x_t) B_t^T     (P x N state)
    y_t = H_t C_t

Three equivalent ways to compute it, all here and tested against each other:

* :func:`ssd_recurrent`: the recurrence above with ``lax.scan`` (the reference; also the decode
  step);
* :func:`ssd_quadratic`: the "attention-like" dual form ``Y = (L o C B^T) (dt X)`` with the
  1-semiseparable mask ``L[i, j] = exp(sum_{k=j+1..i} a_k)`` (Mamba-2 eq. (16)/§5);
* :func:`ssd_chunked`: the chunked algorithm of Mamba-2 §7 / Listing 1 (upstream
  ``ssd_minimal_discrete``): intra-chunk quadratic blocks, chunk states, inter-chunk state passing
  by a (n_chunks+1)^2 semiseparable matrix, and state-to-output. Padding to a multiple of the chunk
  size uses ``dt = 0`` (no decay, no input) so the result and the final state are unchanged.

Block (SSM.md §3, upstream ``Mamba2Simple``/``Mamba2``): ``in_proj -> [z, xBC, dt]``; causal
depthwise conv + SiLU over ``xBC``; ``dt = softplus(dt + dt_bias)`` (dt_bias init as Mamba-1);
``A = -exp(A_log)``, ``A_log = log U[1, 16]`` per head; ``y = SSD(x, dt, A, B, C) + D x``
(D per head, init 1); ``y = RMSNorm(y * silu(z))`` (``norm_before_gate=False``); ``out_proj``.
Shapes: (batch, L, d_model) f32 in and out.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssm import mamba

Array = jax.Array


def segsum(x: Array) -> Array:
    """Stable segment sums: ``out[..., i, j] = sum_{k=j+1..i} x[..., k]`` for i >= j, -inf above.

    Args:
      x: f32[..., T].

    Returns:
      f32[..., T, T]; ``exp(segsum(a))`` is the 1-semiseparable decay mask.
    """
    T = x.shape[-1]
    xr = jnp.broadcast_to(x[..., :, None], (*x.shape, T))  # [i, j] = x[i]
    strict = jnp.tril(jnp.ones((T, T), bool), -1)
    out = jnp.cumsum(jnp.where(strict, xr, 0.0), axis=-2)
    return jnp.where(jnp.tril(jnp.ones((T, T), bool)), out, -jnp.inf)


def _heads(B: Array, nheads: int) -> Array:
    """(b, l, g, n) -> (b, l, h, n), heads of a group share B/C (contiguous groups)."""
    return jnp.repeat(B, nheads // B.shape[2], axis=2)


def _resets(seq_idx: Array | None, b: int, l: int) -> Array:
    """bool[b, l]: position t starts a new document (its incoming state is dropped)."""
    if seq_idx is None:
        return jnp.zeros((b, l), bool)
    return jnp.pad(seq_idx[:, 1:] != seq_idx[:, :-1], ((0, 0), (1, 0)))


def _h0(initial_state, b, h, p, n):
    return jnp.zeros((b, h, p, n), jnp.float32) if initial_state is None else initial_state


def ssd_recurrent(x, dt, A, B, C, initial_state=None, seq_idx=None):
    """Sequential SSD reference.

    Args:
      x: f32[b, l, h, p]; dt: f32[b, l, h] (already softplus'ed); A: f32[h];
      B, C: f32[b, l, g, n]; initial_state: optional f32[b, h, p, n];
      seq_idx: optional int32[b, l] document index (packed sequences): the state is zeroed
        before the first position of each new document (upstream ``seq_idx``).

    Returns:
      ``(y f32[b, l, h, p], final_state f32[b, h, p, n])``.
    """
    b, l, h, p = x.shape
    Bh, Ch = _heads(B, h), _heads(C, h)
    H0 = _h0(initial_state, b, h, p, B.shape[-1])

    def step(H, inp):
        xt, dtt, Bt, Ct, rt = inp
        H = jnp.where(rt[:, None, None, None], 0.0, H)
        H, y = ssd_step(H, xt, dtt, A, Bt, Ct)
        return H, y

    xs = tuple(jnp.moveaxis(a, 1, 0) for a in (x, dt, Bh, Ch, _resets(seq_idx, b, l)))
    H, y = jax.lax.scan(step, H0, xs)
    return jnp.moveaxis(y, 0, 1), H


def ssd_step(H, x, dt, A, B, C):
    """One recurrence step. H f32[b, h, p, n]; x [b, h, p]; dt [b, h]; A [h]; B, C [b, h, n]."""
    decay = jnp.exp(dt * A)[..., None, None]
    H = decay * H + (dt[..., None] * x)[..., None] * B[:, :, None, :]
    return H, jnp.einsum("bhpn,bhn->bhp", H, C)


def _same_doc(seq_idx: Array | None, b: int, l: int) -> Array:
    """bool[b, 1, l, l]: positions i and j are in the same document (all True without seq_idx)."""
    if seq_idx is None:
        return jnp.ones((b, 1, l, l), bool)
    return (seq_idx[:, :, None] == seq_idx[:, None, :])[:, None]


def ssd_quadratic(x, dt, A, B, C, initial_state=None, seq_idx=None):
    """Dual quadratic form ``Y = (L o C B^T)(dt X)`` (Mamba-2 §5), O(l^2), plus the incoming
    state's term ``C_t exp(sum_{k<=t} a_k) H0`` and the final state
    ``sum_s exp(sum_{k>s} a_k) (dt x_s) B_s^T + exp(sum a) H0``. Shapes as :func:`ssd_recurrent`
    (``seq_idx``: the mask L is zero across documents; H0 reaches only the first document)."""
    b, l, h, p = x.shape
    a = jnp.moveaxis(dt * A, 1, 2)  # (b, h, l)
    first = _same_doc(seq_idx, b, l)[:, :, :, 0]  # (b, 1, l): in the first document
    last = _same_doc(seq_idx, b, l)[:, :, -1, :]  # (b, 1, l): in the last document
    Lm = jnp.where(_same_doc(seq_idx, b, l), jnp.exp(segsum(a)), 0.0)  # (b, h, l, l)
    Bh, Ch, Xd = _heads(B, h), _heads(C, h), x * dt[..., None]
    y = jnp.einsum("blhn,bshn,bhls,bshp->blhp", Ch, Bh, Lm, Xd)
    H0 = _h0(initial_state, b, h, p, B.shape[-1])
    acum = jnp.cumsum(a, axis=-1)
    into = jnp.where(first, jnp.exp(acum), 0.0)  # (b, h, l) decay of H0 up to t
    y = y + jnp.einsum("blhn,bhpn,bhl->blhp", Ch, H0, into)
    out = jnp.where(last, jnp.exp(acum[..., -1:] - acum), 0.0)  # decay from s to the end
    final = jnp.einsum("bhs,bshp,bshn->bhpn", out, Xd, Bh)
    return y, final + jnp.where(first[:, :, -1], jnp.exp(acum[..., -1]), 0.0)[..., None, None] * H0


def ssd_chunked(x, dt, A, B, C, chunk_size: int, initial_state=None, seq_idx=None):
    """Chunked SSD (Mamba-2 §7, Listing 1). Shapes as :func:`ssd_recurrent`.

    With ``seq_idx`` (upstream ``mamba_chunk_scan_combined(seq_idx=)``), every decay that crosses
    a document boundary is zeroed: inside a chunk the segsum mask, a chunk state's contribution to
    positions of a later document and the state passed between chunks.

    Returns:
      ``(y f32[b, l, h, p], final_state f32[b, h, p, n])``.
    """
    b, l, h, p = x.shape
    n = B.shape[-1]
    T = chunk_size
    pad = (-l) % T
    if seq_idx is None:
        seq_idx = jnp.zeros((b, l), jnp.int32)
    if pad:
        padf = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
        x, dt, B, C = padf(x), padf(dt), padf(B), padf(C)
        seq_idx = jnp.pad(seq_idx, ((0, 0), (0, pad)), mode="edge")
    nc = (l + pad) // T
    sc = seq_idx.reshape(b, nc, T)
    Xd = (x * dt[..., None]).reshape(b, nc, T, h, p)
    Bc = _heads(B, h).reshape(b, nc, T, h, n)
    Cc = _heads(C, h).reshape(b, nc, T, h, n)
    Ad = jnp.moveaxis((dt * A).reshape(b, nc, T, h), -1, 1)  # (b, h, c, T)
    A_cum = jnp.cumsum(Ad, axis=-1)

    # 1. intra-chunk (diagonal blocks)
    same = (sc[:, :, :, None] == sc[:, :, None, :])[:, None]  # (b, 1, c, T, T)
    Lmask = jnp.where(same, jnp.exp(segsum(Ad)), 0.0)
    Y_diag = jnp.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, Lmask, Xd)
    # 2. state of each chunk from zero (only positions in the chunk's last document count)
    in_last = (sc == sc[..., -1:])[:, None]  # (b, 1, c, T)
    decay_states = jnp.where(in_last, jnp.exp(A_cum[..., -1:] - A_cum), 0.0)
    states = jnp.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_states, Xd)
    # 3. inter-chunk recurrence on the chunk boundaries; a chunk passes its incoming state on
    # only if it contains no boundary (same document at its first and last position, and the
    # same as the previous chunk's last position).
    H0 = _h0(initial_state, b, h, p, n)
    states = jnp.concatenate([H0[:, None], states], axis=1)
    prev_last = jnp.concatenate([sc[:, :1, 0], sc[:, :-1, -1]], axis=1)  # (b, c)
    passes = (sc[..., -1] == prev_last)[:, None]  # (b, 1, c)
    chunk_decay = jnp.where(passes, A_cum[..., -1], -jnp.inf)
    decay_chunk = jnp.exp(segsum(jnp.pad(chunk_decay, ((0, 0), (0, 0), (1, 0)))))
    new_states = jnp.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final = new_states[:, :-1], new_states[:, -1]
    # 4. contribution of the incoming state to the positions still in the previous document
    in_first = (sc == prev_last[..., None])[:, None]  # (b, 1, c, T)
    Y_off = jnp.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states,
                       jnp.where(in_first, jnp.exp(A_cum), 0.0))  # fmt: skip
    y = (Y_diag + Y_off).reshape(b, nc * T, h, p)[:, :l]
    return y, final


class Mamba2Cache(NamedTuple):
    """Decode state: conv f32[batch, d_conv-1, d_inner + 2 g n]; ssm f32[batch, h, p, n]."""

    conv: Array
    ssm: Array


# Parallel SSD algorithms by name: (x, dt, A, B, C, chunk_size, initial_state, seq_idx) ->
# (y, final_state); all compute the same values.
SSD_FNS = {
    "chunked": ssd_chunked,
    "quadratic": lambda x, dt, A, B, C, T, h0, s: ssd_quadratic(x, dt, A, B, C, h0, s),
    "recurrent": lambda x, dt, A, B, C, T, h0, s: ssd_recurrent(x, dt, A, B, C, h0, s),
}
SSD_IMPLS = tuple(SSD_FNS)


def gated_group_rms_norm(y: Array, z: Array, w: Array, ngroups: int, eps: float) -> Array:
    """Upstream ``RMSNormGated(norm_before_gate=False, group_size=d_ssm // ngroups)``:
    ``g = y * silu(z)`` normalised over each of the ``ngroups`` contiguous groups of channels
    separately, times ``w``. y, z: [..., d_inner]; w: f32[d_inner]; computed in f32."""
    g = y.astype(jnp.float32) * nn.silu(z.astype(jnp.float32))
    gg = g.reshape(*g.shape[:-1], ngroups, g.shape[-1] // ngroups)
    gg = gg * jax.lax.rsqrt(jnp.mean(gg * gg, axis=-1, keepdims=True) + eps)
    return gg.reshape(g.shape) * w


class Mamba2Mixer(nn.Module):
    """Mamba-2 (SSD) mixer, (batch, L, d_model) -> (batch, L, d_model).

    ``ssd_impl`` picks the parallel algorithm ("chunked" default, "quadratic", "recurrent");
    all give the same outputs. ``conv_bias``, ``linear_init`` and ``dtype`` as
    :class:`ssm.mamba.MambaMixer` (the SSD and the gated norm run in f32).
    """

    d_model: int
    d_state: int = 64
    d_conv: int = 4
    expand: int = 2
    headdim: int = 64
    ngroups: int = 1
    A_init_range: tuple[float, float] = (1.0, 16.0)
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4
    chunk_size: int = 64
    ssd_impl: str = "chunked"
    out_proj_scale: float = 1.0
    norm_eps: float = 1e-5
    conv_bias: bool = True
    linear_init: str = "torch"
    dtype: jnp.dtype = jnp.float32

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def nheads(self) -> int:
        return self.d_inner // self.headdim

    @property
    def conv_dim(self) -> int:
        return self.d_inner + 2 * self.ngroups * self.d_state

    def setup(self):
        if self.d_inner % self.headdim:
            raise ValueError(f"d_inner={self.d_inner} must be a multiple of headdim={self.headdim}")
        if self.nheads % self.ngroups:
            raise ValueError(f"nheads={self.nheads} must be a multiple of ngroups={self.ngroups}")
        if self.ssd_impl not in SSD_IMPLS:
            raise ValueError(f"unknown ssd_impl {self.ssd_impl!r}; registered: {list(SSD_IMPLS)}")
        h = self.nheads
        self.in_proj = nn.Dense(
            self.d_inner + self.conv_dim + h, use_bias=False, dtype=self.dtype,
            kernel_init=mamba.LINEAR_INITS[self.linear_init], name="in_proj",
        )  # fmt: skip
        self.conv_w, self.conv_b = mamba.conv_params(self, self.d_conv, self.conv_dim,
                                                     self.conv_bias)  # fmt: skip
        self.dt_b = self.param(
            "dt_b", mamba.dt_bias_init(self.dt_min, self.dt_max, self.dt_init_floor), (h,)
        )
        lo, hi = self.A_init_range
        self.A_log = self.param(
            "A_log", lambda k, s: jnp.log(jax.random.uniform(k, s, jnp.float32, lo, hi)), (h,)
        )
        self.D = self.param("D", nn.initializers.ones, (h,))
        self.norm_w = self.param("norm_w", nn.initializers.ones, (self.d_inner,))
        base = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        self.out_proj = nn.Dense(
            self.d_model, use_bias=False, dtype=self.dtype,
            kernel_init=mamba.scaled_init(base, self.out_proj_scale), name="out_proj",
        )  # fmt: skip

    def _split(self, zxbcdt):
        di = self.d_inner
        return zxbcdt[..., :di], zxbcdt[..., di : di + self.conv_dim], zxbcdt[..., -self.nheads :]

    def _split_xbc(self, xbc):
        di, gn = self.d_inner, self.ngroups * self.d_state
        shp = xbc.shape[:-1]
        xbc = xbc.astype(jnp.float32)
        x = xbc[..., :di].reshape(*shp, self.nheads, self.headdim)
        B = xbc[..., di : di + gn].reshape(*shp, self.ngroups, self.d_state)
        C = xbc[..., di + gn :].reshape(*shp, self.ngroups, self.d_state)
        return x, B, C

    def _out(self, y, z):
        """Gated RMSNorm per group, then out_proj (norm_before_gate=False)."""
        g = gated_group_rms_norm(y, z, self.norm_w, self.ngroups, self.norm_eps)
        return self.out_proj(g.astype(self.dtype))

    def prefill(
        self, u: Array, cache: Mamba2Cache | None = None, seq_idx: Array | None = None
    ) -> tuple[Array, Mamba2Cache]:
        """Parallel forward that also returns the decode cache; arguments as
        :meth:`ssm.mamba.MambaMixer.prefill` (``seq_idx`` resets the conv window and the SSD
        state at document boundaries)."""
        z, xbc, dt = self._split(self.in_proj(u.astype(self.dtype)))
        hist = None if cache is None else cache.conv
        xbc, conv = mamba.causal_depthwise_conv(xbc, self.conv_w, self.conv_b, hist, seq_idx)
        x, B, C = self._split_xbc(nn.silu(xbc))
        dt = jax.nn.softplus(dt.astype(jnp.float32) + self.dt_b)
        A = -jnp.exp(self.A_log)
        h0 = None if cache is None else cache.ssm
        y, H = SSD_FNS[self.ssd_impl](x, dt, A, B, C, self.chunk_size, h0, seq_idx)
        y = y + self.D[:, None] * x
        out = self._out(y.reshape(*u.shape[:-1], self.d_inner), z)
        return out, Mamba2Cache(conv.astype(jnp.float32), H)

    def __call__(self, u: Array, seq_idx: Array | None = None) -> Array:
        return self.prefill(u, None, seq_idx)[0]

    def step(self, u: Array, cache: Mamba2Cache) -> tuple[Array, Mamba2Cache]:
        """One token: u [batch, d_model] -> (out [batch, d_model], new cache)."""
        z, xbc, dt = self._split(self.in_proj(u.astype(self.dtype)))
        window = jnp.concatenate([cache.conv.astype(xbc.dtype), xbc[:, None, :]], axis=1)
        xbc = jnp.einsum("bkc,kc->bc", window, self.conv_w.astype(xbc.dtype))
        xbc = xbc if self.conv_b is None else xbc + self.conv_b.astype(xbc.dtype)
        x, B, C = self._split_xbc(nn.silu(xbc))
        dt = jax.nn.softplus(dt.astype(jnp.float32) + self.dt_b)
        A = -jnp.exp(self.A_log)
        H, y = ssd_step(cache.ssm, x, dt, A, _heads(B[:, None], self.nheads)[:, 0],
                        _heads(C[:, None], self.nheads)[:, 0])  # fmt: skip
        y = y + self.D[:, None] * x
        out = self._out(y.reshape(u.shape[0], self.d_inner), z)
        return out, Mamba2Cache(window[:, 1:].astype(jnp.float32), H)


def init_mamba2_cache(batch, d_model, d_state, d_conv, expand, headdim, ngroups):
    di = expand * d_model
    return Mamba2Cache(
        conv=jnp.zeros((batch, d_conv - 1, di + 2 * ngroups * d_state), jnp.float32),
        ssm=jnp.zeros((batch, di // headdim, headdim, d_state), jnp.float32),
    )
