"""Mamba (v1) mixer: selective SSM block (Gu & Dao 2023, arXiv 2312.00752, §3.4 Fig. 3, Alg. 2).

Layout (batch, L, D) throughout (SSM.md §1.4). Forward (SSM.md §2, upstream ``mamba_simple.py``):

1. ``x, z = split(in_proj(h))``, each (B, L, d_inner), ``d_inner = expand * d_model``;
2. ``x = silu(causal_depthwise_conv(x))`` (kernel ``d_conv``, left padding ``d_conv - 1``);
3. ``dt_low, B, C = split(x_proj(x))`` with sizes (dt_rank, d_state, d_state);
4. ``dt = W_dt dt_low`` **without** bias; the bias enters the scan as ``delta_bias``;
5. ``y = selective_scan(x, dt, A, B, C, D, z, delta_bias=b_dt, delta_softplus=True)`` through
   :func:`ssm.scan.selective_scan` with the configured back-end (Mamba Alg. 2; the gate
   ``y * silu(z)`` is applied by the scan);
6. ``out = out_proj(y)``.

Initialisation (Mamba §3.6, upstream ``Mamba.__init__``):

* ``dt_proj.kernel ~ U(-s, s)``, ``s = dt_rank^-1/2 * dt_scale`` (``dt_init="random"``; ``"constant"``
  sets every entry to ``s``);
* ``dt_proj.bias = softplus^-1(dt)``, ``dt = exp(U[log dt_min, log dt_max])`` clamped to
  ``>= dt_init_floor`` (so ``softplus(bias)`` starts in [dt_min, dt_max]);
* ``A_log = log(1..N)`` per channel (S4D-Real; ``A = -exp(A_log)``), ``D = 1``;
* ``out_proj`` kernel scaled by ``1/sqrt(n_layer)`` (upstream ``_init_weights`` with
  ``rescale_prenorm_residual``; here a field ``out_proj_scale`` set by the LM).

Recurrent mode (:meth:`MambaMixer.step`, upstream ``Mamba.step``): the conv state keeps the last
``d_conv - 1`` inputs of the conv, the SSM state (B, d_inner, d_state) f32 is advanced by
:func:`ssm.scan.selective_state_update`; iterating it equals the parallel forward.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from ssm import scan

Array = jax.Array


class MambaCache(NamedTuple):
    """Decode state of one Mamba mixer.

    conv: f32[batch, d_conv - 1, d_inner], the last inputs of the causal conv (oldest first).
    ssm: f32[batch, d_inner, d_state], the selective-SSM state h.
    """

    conv: Array
    ssm: Array


def dt_bias_init(dt_min: float, dt_max: float, dt_init_floor: float):
    """Inverse-softplus of ``dt ~ logU[dt_min, dt_max]`` (Mamba §3.6; SSM.md §2)."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, jnp.float32)
        dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = jnp.maximum(dt, dt_init_floor)
        return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)

    return init


def causal_depthwise_conv(x: Array, w: Array, b: Array) -> Array:
    """``y[:, t, c] = b[c] + sum_k w[k, c] x[:, t - (W-1) + k, c]`` with zeros before t=0.

    Args:
      x: f32[batch, L, C]; w: f32[W, C]; b: f32[C].
    """
    W = w.shape[0]
    xp = jnp.pad(x, ((0, 0), (W - 1, 0), (0, 0)))
    L = x.shape[1]
    return b + sum(w[k] * xp[:, k : k + L] for k in range(W))


class MambaMixer(nn.Module):
    """The Mamba v1 mixer, (batch, L, d_model) -> (batch, L, d_model).

    Attributes are the upstream defaults (SSM.md §2). ``scan_method`` names a
    :func:`ssm.scan.selective_scan` back-end ("ref", "associative", "chunked", "pallas").
    """

    d_model: int
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int | None = None  # None -> ceil(d_model / 16) ("auto")
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_init: str = "random"
    dt_scale: float = 1.0
    dt_init_floor: float = 1e-4
    conv_bias: bool = True
    bias: bool = False
    scan_method: str = "ref"
    chunk_size: int = 64
    out_proj_scale: float = 1.0

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    def setup(self):
        di, N, R = self.d_inner, self.d_state, self.rank
        self.in_proj = nn.Dense(2 * di, use_bias=self.bias, name="in_proj")
        # PyTorch Conv1d default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = d_conv.
        bound = 1.0 / math.sqrt(self.d_conv)
        uni = lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound)
        self.conv_w = self.param("conv_w", uni, (self.d_conv, di))
        self.conv_b = self.param("conv_b", uni if self.conv_bias else nn.initializers.zeros, (di,))
        self.x_proj = nn.Dense(R + 2 * N, use_bias=False, name="x_proj")
        std = R**-0.5 * self.dt_scale
        if self.dt_init == "random":
            w_init = lambda k, s: jax.random.uniform(k, s, jnp.float32, -std, std)
        elif self.dt_init == "constant":
            w_init = nn.initializers.constant(std)
        else:
            raise ValueError(f"dt_init must be 'random' or 'constant', got {self.dt_init!r}")
        self.dt_w = self.param("dt_w", w_init, (R, di))
        self.dt_b = self.param(
            "dt_b", dt_bias_init(self.dt_min, self.dt_max, self.dt_init_floor), (di,)
        )
        self.A_log = self.param(
            "A_log",
            lambda k, s: jnp.log(jnp.broadcast_to(jnp.arange(1, N + 1, dtype=jnp.float32), s)),
            (di, N),
        )
        self.D = self.param("D", nn.initializers.ones, (di,))
        scale = self.out_proj_scale
        base = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # kaiming(a=sqrt5)
        self.out_proj = nn.Dense(
            self.d_model,
            use_bias=self.bias,
            kernel_init=lambda k, s, d=jnp.float32: base(k, s, d) * scale,
            name="out_proj",
        )

    def _ssm_inputs(self, x: Array):
        N, R = self.d_state, self.rank
        dbc = self.x_proj(x)
        dt_low, B, C = dbc[..., :R], dbc[..., R : R + N], dbc[..., R + N :]
        return dt_low @ self.dt_w, B, C, -jnp.exp(self.A_log)

    def __call__(self, h: Array) -> Array:
        xz = self.in_proj(h)
        x, z = jnp.split(xz, 2, axis=-1)
        x = nn.silu(causal_depthwise_conv(x, self.conv_w, self.conv_b))
        dt, B, C, A = self._ssm_inputs(x)
        y = scan.selective_scan(
            x, dt, A, B, C, self.D, z,
            delta_bias=self.dt_b, delta_softplus=True,
            method=self.scan_method, chunk_size=self.chunk_size,
        )  # fmt: skip
        return self.out_proj(y)

    def step(self, h: Array, cache: MambaCache) -> tuple[Array, MambaCache]:
        """One token: h f32[batch, d_model] -> (out f32[batch, d_model], new cache)."""
        x, z = jnp.split(self.in_proj(h), 2, axis=-1)
        window = jnp.concatenate([cache.conv, x[:, None, :]], axis=1)  # (B, d_conv, di)
        xc = nn.silu(jnp.einsum("bkc,kc->bc", window, self.conv_w) + self.conv_b)
        dt, B, C, A = self._ssm_inputs(xc)
        y, ssm_state = scan.selective_state_update(
            cache.ssm, xc, dt, A, B, C, self.D, z, dt_bias=self.dt_b, dt_softplus=True
        )
        return self.out_proj(y), MambaCache(conv=window[:, 1:], ssm=ssm_state)


def init_mamba_cache(batch: int, d_model: int, d_state: int, d_conv: int, expand: int):
    di = expand * d_model
    return MambaCache(
        conv=jnp.zeros((batch, d_conv - 1, di), jnp.float32),
        ssm=jnp.zeros((batch, di, d_state), jnp.float32),
    )
