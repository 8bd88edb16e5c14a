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

import math
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


def ssd_recurrent(x, dt, A, B, C, initial_state=None):
    """Sequential SSD reference.

    Args:
      x: f32[b, l, h, p]; dt: f32[b, l, h] (already softplus'ed); A: f32[h];
      B, C: f32[b, l, g, n]; initial_state: optional f32[b, h, p, n].

    Returns:
      ``(y f32[b, l, h, p], final_state f32[b, h, p, n])``.
    """
    b, _, h, p = x.shape
    Bh, Ch = _heads(B, h), _heads(C, h)
    n = B.shape[-1]
    H0 = jnp.zeros((b, h, p, n), jnp.float32) if initial_state is None else initial_state

    def step(H, inp):
        xt, dtt, Bt, Ct = inp
        H, y = ssd_step(H, xt, dtt, A, Bt, Ct)
        return H, y

    xs = tuple(jnp.moveaxis(a, 1, 0) for a in (x, dt, Bh, Ch))
    H, y = jax.lax.scan(step, H0, xs)
    return jnp.moveaxis(y, 0, 1), H


def ssd_step(H, x, dt, A, B, C):
    """One recurrence step. H f32[b, h, p, n]; x [b, h, p]; dt [b, h]; A [h]; B, C [b, h, n]."""
    decay = jnp.exp(dt * A)[..., None, None]
    H = decay * H + (dt[..., None] * x)[..., None] * B[:, :, None, :]
    return H, jnp.einsum("bhpn,bhn->bhp", H, C)


def ssd_quadratic(x, dt, A, B, C):
    """Dual quadratic form ``Y = (L o C B^T)(dt X)`` (Mamba-2 §5), O(l^2). Shapes as
    :func:`ssd_recurrent`; returns y f32[b, l, h, p]."""
    h = x.shape[2]
    L = jnp.exp(segsum(jnp.moveaxis(dt * A, 1, 2)))  # (b, h, l, l)
    return jnp.einsum("blhn,bshn,bhls,bshp->blhp", _heads(C, h), _heads(B, h), L, x * dt[..., None])


def ssd_chunked(x, dt, A, B, C, chunk_size: int, initial_state=None):
    """Chunked SSD (Mamba-2 §7, Listing 1). Shapes as :func:`ssd_recurrent`.

    Returns:
      ``(y f32[b, l, h, p], final_state f32[b, h, p, n])``.
    """
    b, l, h, p = x.shape
    n = B.shape[-1]
    T = chunk_size
    pad = (-l) % T
    if pad:
        padf = lambda a: jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))
        x, dt, B, C = padf(x), padf(dt), padf(B), padf(C)
    nc = (l + pad) // T
    Xd = (x * dt[..., None]).reshape(b, nc, T, h, p)
    Bc = _heads(B, h).reshape(b, nc, T, h, n)
    Cc = _heads(C, h).reshape(b, nc, T, h, n)
    Ad = jnp.moveaxis((dt * A).reshape(b, nc, T, h), -1, 1)  # (b, h, c, T)
    A_cum = jnp.cumsum(Ad, axis=-1)

    # 1. intra-chunk (diagonal blocks)
    Lmask = jnp.exp(segsum(Ad))
    Y_diag = jnp.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", Cc, Bc, Lmask, Xd)
    # 2. state of each chunk from zero
    decay_states = jnp.exp(A_cum[..., -1:] - A_cum)
    states = jnp.einsum("bclhn,bhcl,bclhp->bchpn", Bc, decay_states, Xd)
    # 3. inter-chunk recurrence on the chunk boundaries
    H0 = jnp.zeros((b, h, p, n), jnp.float32) if initial_state is None else initial_state
    states = jnp.concatenate([H0[:, None], states], axis=1)
    decay_chunk = jnp.exp(segsum(jnp.pad(A_cum[..., -1], ((0, 0), (0, 0), (1, 0)))))
    new_states = jnp.einsum("bhzc,bchpn->bzhpn", decay_chunk, states)
    states, final = new_states[:, :-1], new_states[:, -1]
    # 4. contribution of the incoming state to each position
    Y_off = jnp.einsum("bclhn,bchpn,bhcl->bclhp", Cc, states, jnp.exp(A_cum))
    y = (Y_diag + Y_off).reshape(b, nc * T, h, p)[:, :l]
    return y, final


class Mamba2Cache(NamedTuple):
    """Decode state: conv f32[batch, d_conv-1, d_inner + 2 g n]; ssm f32[batch, h, p, n]."""

    conv: Array
    ssm: Array


# Parallel SSD algorithms by name: (x, dt, A, B, C, chunk_size) -> y; all compute the same y.
SSD_FNS = {
    "chunked": lambda x, dt, A, B, C, T: ssd_chunked(x, dt, A, B, C, T)[0],
    "quadratic": lambda x, dt, A, B, C, T: ssd_quadratic(x, dt, A, B, C),
    "recurrent": lambda x, dt, A, B, C, T: ssd_recurrent(x, dt, A, B, C)[0],
}
SSD_IMPLS = tuple(SSD_FNS)


class Mamba2Mixer(nn.Module):
    """Mamba-2 (SSD) mixer, (batch, L, d_model) -> (batch, L, d_model).

    ``ssd_impl`` picks the parallel algorithm ("chunked" default, "quadratic", "recurrent");
    all give the same outputs.
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
        self.in_proj = nn.Dense(self.d_inner + self.conv_dim + h, use_bias=False, name="in_proj")
        bound = 1.0 / math.sqrt(self.d_conv)
        uni = lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound)
        self.conv_w = self.param("conv_w", uni, (self.d_conv, self.conv_dim))
        self.conv_b = self.param("conv_b", uni, (self.conv_dim,))
        self.dt_b = self.param(
            "dt_b", mamba.dt_bias_init(self.dt_min, self.dt_max, self.dt_init_floor), (h,)
        )
        lo, hi = self.A_init_range
        self.A_log = self.param(
            "A_log", lambda k, s: jnp.log(jax.random.uniform(k, s, jnp.float32, lo, hi)), (h,)
        )
        self.D = self.param("D", nn.initializers.ones, (h,))
        self.norm_w = self.param("norm_w", nn.initializers.ones, (self.d_inner,))
        scale = self.out_proj_scale
        base = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
        self.out_proj = nn.Dense(
            self.d_model,
            use_bias=False,
            kernel_init=lambda k, s, d=jnp.float32: base(k, s, d) * scale,
            name="out_proj",
        )

    def _split(self, zxbcdt):
        di = self.d_inner
        return zxbcdt[..., :di], zxbcdt[..., di : di + self.conv_dim], zxbcdt[..., -self.nheads :]

    def _split_xbc(self, xbc):
        di, gn = self.d_inner, self.ngroups * self.d_state
        shp = xbc.shape[:-1]
        x = xbc[..., :di].reshape(*shp, self.nheads, self.headdim)
        B = xbc[..., di : di + gn].reshape(*shp, self.ngroups, self.d_state)
        C = xbc[..., di + gn :].reshape(*shp, self.ngroups, self.d_state)
        return x, B, C

    def _out(self, y, z):
        """Gated RMSNorm ``norm(y * silu(z))`` then out_proj (norm_before_gate=False)."""
        g = y * nn.silu(z)
        g = g * jax.lax.rsqrt(jnp.mean(g * g, axis=-1, keepdims=True) + self.norm_eps)
        return self.out_proj(g * self.norm_w)

    def __call__(self, u: Array) -> Array:
        z, xbc, dt = self._split(self.in_proj(u))
        xbc = nn.silu(mamba.causal_depthwise_conv(xbc, self.conv_w, self.conv_b))
        x, B, C = self._split_xbc(xbc)
        dt = jax.nn.softplus(dt + self.dt_b)
        A = -jnp.exp(self.A_log)
        y = SSD_FNS[self.ssd_impl](x, dt, A, B, C, self.chunk_size)
        y = y + self.D[:, None] * x
        return self._out(y.reshape(*u.shape[:-1], self.d_inner), z)

    def step(self, u: Array, cache: Mamba2Cache) -> tuple[Array, Mamba2Cache]:
        """One token: u f32[batch, d_model] -> (out f32[batch, d_model], new cache)."""
        z, xbc, dt = self._split(self.in_proj(u))
        window = jnp.concatenate([cache.conv, xbc[:, None, :]], axis=1)
        xbc = nn.silu(jnp.einsum("bkc,kc->bc", window, self.conv_w) + self.conv_b)
        x, B, C = self._split_xbc(xbc)
        dt = jax.nn.softplus(dt + self.dt_b)
        A = -jnp.exp(self.A_log)
        H, y = ssd_step(cache.ssm, x, dt, A, _heads(B[:, None], self.nheads)[:, 0],
                        _heads(C[:, None], self.nheads)[:, 0])  # fmt: skip
        y = y + self.D[:, None] * x
        return self._out(y.reshape(u.shape[0], self.d_inner), z), Mamba2Cache(window[:, 1:], H)


def init_mamba2_cache(batch, d_model, d_state, d_conv, expand, headdim, ngroups):
    di = expand * d_model
    return Mamba2Cache(
        conv=jnp.zeros((batch, d_conv - 1, di + 2 * ngroups * d_state), jnp.float32),
        ssm=jnp.zeros((batch, di // headdim, headdim, d_state), jnp.float32),
    )
