"""Transformer baseline mixer with a KV cache (Vaswani et al. 2017; the Mamba paper's MHA baseline
for induction heads, §4.1.2, uses multi-head attention with RoPE among its position encodings).

The mixer is the attention sub-layer plus the MLP sub-layer of a pre-norm block::

    a = h + Attn(RMSNorm(h));   out = a + MLP(RMSNorm(a))      (returned as out - h)

so it plugs into the LM's residual ``h + mixer(h)`` like the SSM mixers (which see ``RMSNorm(h)``:
the LM gives the transformer the un-normalised stream, see :mod:`ssm.lm`). Rotary position
embeddings (RoPE, Su et al. 2021) on q and k, causal softmax attention in f32, GELU MLP (4x).

Decode (:meth:`TransformerMixer.step`) writes this token's k, v at position ``cache.pos`` of a
fixed-size cache (batch, max_len, heads, head_dim) and attends to positions ``<= pos``: O(pos)
per token, against O(1) for the SSMs.
"""

from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jax.Array


class KVCache(NamedTuple):
    """k, v: f32[batch, max_len, heads, head_dim]; pos: int32[] the next position to write."""

    k: Array
    v: Array
    pos: Array


def rope(x: Array, positions: Array, base: float = 10000.0) -> Array:
    """Rotary embedding. x f32[..., L, heads, d] (d even), positions int[L] or int[batch, L]
    -> same shape."""
    d = x.shape[-1]
    inv = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    ang = positions.astype(jnp.float32)[..., None] * inv  # (..., L, d/2)
    cos, sin = jnp.cos(ang)[..., None, :], jnp.sin(ang)[..., None, :]
    x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1)


def rms_norm(x: Array, w: Array, eps: float) -> Array:
    x32 = x.astype(jnp.float32)
    return x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps) * w


class TransformerMixer(nn.Module):
    """Pre-norm attention + MLP block; (batch, L, d_model) -> residual update of the same shape."""

    d_model: int
    n_heads: int = 4
    mlp_ratio: int = 4
    norm_eps: float = 1e-5
    out_proj_scale: float = 1.0
    dtype: jnp.dtype = jnp.float32  # compute dtype of the projections; softmax stays f32

    def setup(self):
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"d_model={self.d_model} must be n_heads={self.n_heads} times an even head_dim"
            )
        D = self.d_model
        self.norm1 = self.param("norm1", nn.initializers.ones, (D,))
        self.norm2 = self.param("norm2", nn.initializers.ones, (D,))
        dt = self.dtype
        self.qkv = nn.Dense(3 * D, use_bias=False, dtype=dt, name="qkv")
        init = nn.initializers.lecun_normal()
        scaled = lambda k, s, d=jnp.float32: init(k, s, d) * self.out_proj_scale
        self.attn_out = nn.Dense(D, use_bias=False, kernel_init=scaled, dtype=dt, name="attn_out")
        self.fc1 = nn.Dense(self.mlp_ratio * D, dtype=dt, name="fc1")
        self.fc2 = nn.Dense(D, kernel_init=scaled, dtype=dt, name="fc2")

    def _qkv(self, h, positions):
        B, L = h.shape[:2]
        hd = self.d_model // self.n_heads
        x = rms_norm(h, self.norm1, self.norm_eps).astype(self.dtype)
        q, k, v = jnp.split(self.qkv(x).astype(jnp.float32), 3, axis=-1)
        q, k, v = (a.reshape(B, L, self.n_heads, hd) for a in (q, k, v))
        return rope(q, positions), rope(k, positions), v

    def _mlp_residual(self, h, attn):
        h = h.astype(jnp.float32)
        a = h + self.attn_out(attn.astype(self.dtype)).astype(jnp.float32)
        m = self.fc2(nn.gelu(self.fc1(rms_norm(a, self.norm2, self.norm_eps).astype(self.dtype))))
        return a + m.astype(jnp.float32) - h

    @staticmethod
    def _attend(q, k, v, mask):
        """Causal softmax attention; q [b, q, h, d], k/v [b, k, h, d], mask bool [q, k].

        Computed head-major ([b, h, q, k] scores): on XLA CPU the [b, q, h, d] contraction of
        the probabilities with v is up to ~15x slower at L = 256 (measured)."""
        q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
        s = jnp.einsum("bhqd,bhkd->bhqk", q, k) * q.shape[-1] ** -0.5
        s = jnp.where(mask, s, -jnp.inf)
        return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v), 1, 2)

    def __call__(self, h: Array, seq_idx: Array | None = None) -> Array:
        """h [batch, L, d_model]; ``seq_idx`` int32[batch, L] (packed documents): attention is
        masked to the query's document and RoPE positions restart at each document (as
        recurrentgemma's ``segment_pos``), so a packed row equals its documents run apart."""
        B, L, D = h.shape
        pos = jnp.arange(L)
        causal = pos[:, None] >= pos[None, :]
        if seq_idx is None:
            q, k, v = self._qkv(h, pos)
            return self._mlp_residual(h, self._attend(q, k, v, causal).reshape(B, L, D))
        q, k, v = self._qkv(h, segment_positions(seq_idx))
        mask = (causal[None] & (seq_idx[:, :, None] == seq_idx[:, None, :]))[:, None]
        return self._mlp_residual(h, self._attend(q, k, v, mask).reshape(B, L, D))

    def prefill(self, h: Array, cache: KVCache) -> tuple[Array, KVCache]:
        """Parallel forward over a chunk written into the KV cache at ``cache.pos``: the chunk's
        queries attend to every cached key at a position <= their own. h [batch, L, d_model];
        needs ``cache.pos + L <= max_len``. Returns ``(out, cache advanced by L)``."""
        B, L, D = h.shape
        pos = cache.pos + jnp.arange(L)
        q, k, v = self._qkv(h, pos)
        K = jax.lax.dynamic_update_slice_in_dim(cache.k, k.astype(cache.k.dtype), cache.pos, 1)
        V = jax.lax.dynamic_update_slice_in_dim(cache.v, v.astype(cache.v.dtype), cache.pos, 1)
        mask = jnp.arange(K.shape[1])[None, :] <= pos[:, None]
        attn = self._attend(q, K, V, mask).reshape(B, L, D)
        return self._mlp_residual(h, attn), KVCache(K, V, cache.pos + L)

    def step(self, h: Array, cache: KVCache) -> tuple[Array, KVCache]:
        """One token h f32[batch, d_model] at position ``cache.pos``."""
        B, D = h.shape
        q, k, v = self._qkv(h[:, None], cache.pos[None])
        K = jax.lax.dynamic_update_slice_in_dim(cache.k, k, cache.pos, axis=1)
        V = jax.lax.dynamic_update_slice_in_dim(cache.v, v, cache.pos, axis=1)
        mask = (jnp.arange(K.shape[1]) <= cache.pos)[None, :]
        attn = self._attend(q, K, V, mask).reshape(B, D)
        return self._mlp_residual(h, attn), KVCache(K, V, cache.pos + 1)


def segment_positions(seq_idx: Array) -> Array:
    """Position of each token inside its document: int32[batch, L] from a non-decreasing
    document index int32[batch, L] (recurrentgemma's ``segment_pos``)."""
    L = seq_idx.shape[-1]
    t = jnp.arange(L)
    start = jnp.pad(seq_idx[:, 1:] != seq_idx[:, :-1], ((0, 0), (1, 0)), constant_values=True)
    return t - jax.lax.cummax(jnp.where(start, t, 0), axis=1)


def init_kv_cache(batch: int, max_len: int, d_model: int, n_heads: int) -> KVCache:
    shape = (batch, max_len, n_heads, d_model // n_heads)
    return KVCache(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32), jnp.array(0))
