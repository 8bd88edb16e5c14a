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
:meth:`MambaMixer.prefill` is the parallel forward that also returns that cache (the scan's last
state and the last conv inputs) and can start from one, so a prompt costs one parallel pass.
Packed sequences: ``seq_idx`` resets the conv window and the scan state at document boundaries.
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


def causal_depthwise_conv(
    x: Array, w: Array, b: Array | None, history: Array | None = None, seq_idx: Array | None = None
) -> tuple[Array, Array]:
    """``y[:, t, c] = b[c] + sum_k w[k, c] x[:, t - (W-1) + k, c]``, the inputs before t = 0 taken
    from ``history`` (zeros when None), and, with ``seq_idx``, zero for a tap in another document
    (the conv window is reset at document boundaries, as upstream ``causal_conv1d(seq_idx=)``).

    Args:
      x: [batch, L, C]; w: [W, C]; b: [C] or None (``conv_bias=False``);
      history: optional [batch, W-1, C], the W-1 inputs before x (a decode cache's ``conv``);
      seq_idx: optional int32[batch, L] document index of each position (non-decreasing).

    Returns:
      ``(y [batch, L, C], new_history [batch, W-1, C])``: the last W-1 inputs (history included),
      i.e. the conv cache after this chunk.
    """
    W, (bsz, L, C) = w.shape[0], x.shape
    if history is None:
        history = jnp.zeros((bsz, W - 1, C), x.dtype)
    xp = jnp.concatenate([history.astype(x.dtype), x], axis=1)
    y = jnp.zeros_like(x) if b is None else jnp.broadcast_to(b.astype(x.dtype), x.shape)
    for k in range(W):
        tap = xp[:, k : k + L]
        if seq_idx is not None and k < W - 1:
            lag = W - 1 - k  # tap k reads position t - lag; history counts as the same document
            prev = jnp.pad(seq_idx, ((0, 0), (lag, 0)), constant_values=-1)[:, :L]
            same = (prev == seq_idx) | (prev == -1)
            tap = jnp.where(same[..., None], tap, 0)
        y = y + w[k].astype(x.dtype) * tap
    return y, xp[:, xp.shape[1] - (W - 1) :]


def time_invariant_bc(B: Array, batch: int, length: int) -> Array:
    """Upstream's constant (D, N) B or C (``selective_scan_ref`` with ``B.dim() == 2``) in the form
    :func:`ssm.scan.selective_scan` accepts: grouped [batch, length, D, N] with one group per
    channel (a broadcast, no copy under jit). ``ssm.scan`` has no (D, N) form of its own, so the
    layer level does this."""
    return jnp.broadcast_to(B[None, None], (batch, length, *B.shape))


# Initialisers of the plain Linear layers (in_proj, x_proj) by name. "torch" is PyTorch's default
# ``nn.Linear`` init, kaiming_uniform(a=sqrt 5) = U(+-1/sqrt(fan_in)) (std 0.10 at fan-in 32), which
# upstream mamba_ssm keeps for these layers; "lecun" is Flax's default lecun_normal (std 0.18).
LINEAR_INITS = {
    "torch": nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform"),
    "lecun": nn.initializers.lecun_normal(),
}


def scaled_init(base, scale: float):
    """``base`` times ``scale`` (upstream ``rescale_prenorm_residual`` on out_proj)."""
    return lambda k, s, d=jnp.float32: base(k, s, d) * scale


def conv_params(module: nn.Module, d_conv: int, channels: int, bias: bool):
    """PyTorch Conv1d default init U(+-1/sqrt(d_conv)) (fan_in = d_conv for depthwise); no bias
    parameter at all when ``bias`` is False (upstream ``conv_bias=False``)."""
    bound = 1.0 / math.sqrt(d_conv)
    uni = lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound)
    w = module.param("conv_w", uni, (d_conv, channels))
    return w, (module.param("conv_b", uni, (channels,)) if bias else None)


class MambaMixer(nn.Module):
    """The Mamba v1 mixer, (batch, L, d_model) -> (batch, L, d_model).

    Attributes are the upstream defaults (SSM.md §2). ``scan_method`` names a
    :func:`ssm.scan.selective_scan` back-end ("ref", "associative", "chunked", "pallas").
    ``linear_init`` picks in_proj/x_proj's init from :data:`LINEAR_INITS` (default "torch", as
    upstream). ``dtype`` is the compute dtype of the projections and the conv (params stay f32,
    the scan state is f32 in every back-end); outputs are in ``dtype``.
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
    linear_init: str = "torch"
    dtype: jnp.dtype = jnp.float32

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    def setup(self):
        di, N, R = self.d_inner, self.d_state, self.rank
        lin = LINEAR_INITS[self.linear_init]
        dense = lambda n, bias, init, name: nn.Dense(
            n, use_bias=bias, kernel_init=init, dtype=self.dtype, name=name
        )
        self.in_proj = dense(2 * di, self.bias, lin, "in_proj")
        self.conv_w, self.conv_b = conv_params(self, self.d_conv, di, self.conv_bias)
        self.x_proj = dense(R + 2 * N, False, lin, "x_proj")
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
        base = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")  # kaiming(a=sqrt5)
        self.out_proj = dense(self.d_model, self.bias, scaled_init(base, self.out_proj_scale),
                              "out_proj")  # fmt: skip

    def _ssm_inputs(self, x: Array):
        N, R = self.d_state, self.rank
        dbc = self.x_proj(x)
        dt_low, B, C = dbc[..., :R], dbc[..., R : R + N], dbc[..., R + N :]
        return dt_low @ self.dt_w.astype(x.dtype), B, C, -jnp.exp(self.A_log)

    def prefill(
        self, h: Array, cache: MambaCache | None = None, seq_idx: Array | None = None
    ) -> tuple[Array, MambaCache]:
        """Parallel forward over a chunk that also returns the decode cache after it.

        Args:
          h: [batch, L, d_model]; cache: the state before the chunk (zeros when None), so
            ``prefill(b, prefill(a)[1])`` equals ``prefill(a ++ b)``;
          seq_idx: optional int32[batch, L] document index (packed sequences): the conv window
            and the SSM state are reset where it changes (``ssm.scan``'s ``seq_idx``, every
            back-end).

        Returns:
          ``(out [batch, L, d_model], MambaCache)``; the cache equals L recurrent steps'.
        """
        x, z = jnp.split(self.in_proj(h.astype(self.dtype)), 2, axis=-1)
        hist = None if cache is None else cache.conv
        xc, conv = causal_depthwise_conv(x, self.conv_w, self.conv_b, hist, seq_idx)
        x = nn.silu(xc)
        dt, B, C, A = self._ssm_inputs(x)
        extra = {} if seq_idx is None else {"seq_idx": seq_idx}
        y, last = scan.selective_scan(
            x, dt, A, B, C, self.D, z,
            delta_bias=self.dt_b, delta_softplus=True, return_last_state=True,
            method=self.scan_method, chunk_size=self.chunk_size,
            initial_state=None if cache is None else cache.ssm, **extra,
        )  # fmt: skip
        return self.out_proj(y), MambaCache(conv=conv.astype(jnp.float32), ssm=last)

    def __call__(self, h: Array, seq_idx: Array | None = None) -> Array:
        """h [batch, L, d_model] -> [batch, L, d_model] (``seq_idx``: see :meth:`prefill`)."""
        return self.prefill(h, None, seq_idx)[0]

    def step(self, h: Array, cache: MambaCache) -> tuple[Array, MambaCache]:
        """One token: h [batch, d_model] -> (out [batch, d_model], new cache)."""
        x, z = jnp.split(self.in_proj(h.astype(self.dtype)), 2, axis=-1)
        window = jnp.concatenate([cache.conv.astype(x.dtype), x[:, None, :]], axis=1)
        xc = jnp.einsum("bkc,kc->bc", window, self.conv_w.astype(x.dtype))
        xc = nn.silu(xc if self.conv_b is None else xc + self.conv_b.astype(x.dtype))
        dt, B, C, A = self._ssm_inputs(xc)
        y, ssm_state = scan.selective_state_update(
            cache.ssm, xc, dt, A, B, C, self.D, z, dt_bias=self.dt_b, dt_softplus=True
        )
        conv = window[:, 1:].astype(jnp.float32)
        return self.out_proj(y.astype(self.dtype)), MambaCache(conv=conv, ssm=ssm_state)


def init_mamba_cache(batch: int, d_model: int, d_state: int, d_conv: int, expand: int):
    di = expand * d_model
    return MambaCache(
        conv=jnp.zeros((batch, d_conv - 1, di), jnp.float32),
        ssm=jnp.zeros((batch, di, d_state), jnp.float32),
    )
