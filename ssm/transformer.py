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
    """Rotary embedding. x f32[..., L, heads, d] (d even), positions int[L] -> same shape."""
    d = x.shape[-1]
    inv = base ** (-jnp.arange(0, d, 2, dtype=jnp.float32) / d)
    ang = positions.astype(jnp.float32)[:, None] * inv  # (L, d/2)
    cos, sin = jnp.cos(ang)[:, None, :], jnp.sin(ang)[:, None, :]
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

    def setup(self):
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(
                f"d_model={self.d_model} must be n_heads={self.n_heads} times an even head_dim"
            )
        D = self.d_model
        self.norm1 = self.param("norm1", nn.initializers.ones, (D,))
        self.norm2 = self.param("norm2", nn.initializers.ones, (D,))
        self.qkv = nn.Dense(3 * D, use_bias=False, name="qkv")
        init = nn.initializers.lecun_normal()
        scaled = lambda k, s, d=jnp.float32: init(k, s, d) * self.out_proj_scale
        self.attn_out = nn.Dense(D, use_bias=False, kernel_init=scaled, name="attn_out")
        self.fc1 = nn.Dense(self.mlp_ratio * D, name="fc1")
        self.fc2 = nn.Dense(D, kernel_init=scaled, name="fc2")

    def _qkv(self, h, positions):
        B, L = h.shape[:2]
        hd = self.d_model // self.n_heads
        q, k, v = jnp.split(self.qkv(rms_norm(h, self.norm1, self.norm_eps)), 3, axis=-1)
        q, k, v = (a.reshape(B, L, self.n_heads, hd) for a in (q, k, v))
        return rope(q, positions), rope(k, positions), v

    def _mlp_residual(self, h, attn):
        a = h + self.attn_out(attn)
        m = self.fc2(nn.gelu(self.fc1(rms_norm(a, self.norm2, self.norm_eps))))
        return a + m - h

    @staticmethod
    def _attend(q, k, v, mask):
        """Causal softmax attention; q [b, q, h, d], k/v [b, k, h, d], mask bool [q, k].

        Computed head-major ([b, h, q, k] scores): on XLA CPU the [b, q, h, d] contraction of
        the probabilities with v is up to ~15x slower at L = 256 (measured)."""
        q, k, v = (jnp.swapaxes(a, 1, 2) for a in (q, k, v))
        s = jnp.einsum("bhqd,bhkd->bhqk", q, k) * q.shape[-1] ** -0.5
        s = jnp.where(mask, s, -jnp.inf)
        return jnp.swapaxes(jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v), 1, 2)

    def __call__(self, h: Array) -> Array:
        B, L, D = h.shape
        pos = jnp.arange(L)
        q, k, v = self._qkv(h, pos)
        attn = self._attend(q, k, v, pos[:, None] >= pos[None, :])
        return self._mlp_residual(h, attn.reshape(B, L, D))

    def step(self, h: Array, cache: KVCache) -> tuple[Array, KVCache]:
        """One token h f32[batch, d_model] at position ``cache.pos``."""
        B, D = h.shape
        q, k, v = self._qkv(h[:, None], cache.pos[None])
        K = jax.lax.dynamic_update_slice_in_dim(cache.k, k, cache.pos, axis=1)
        V = jax.lax.dynamic_update_slice_in_dim(cache.v, v, cache.pos, axis=1)
        mask = (jnp.arange(K.shape[1]) <= cache.pos)[None, :]
        attn = self._attend(q, K, V, mask).reshape(B, D)
        return self._mlp_residual(h, attn), KVCache(K, V, cache.pos + 1)


def init_kv_cache(batch: int, max_len: int, d_model: int, n_heads: int) -> KVCache:
    shape = (batch, max_len, n_heads, d_model // n_heads)
    return KVCache(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32), jnp.array(0))
