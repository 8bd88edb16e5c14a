"""S4D: diagonal state-space layer (Gu et al. 2022, "On the Parameterization and Initialization of
Diagonal State Space Models", arXiv 2206.11893).

Each of the H channels is a single-input single-output diagonal SSM with N/2 complex modes (one of
each conjugate pair is stored; outputs are ``2 Re(.)``, SSM.md §4.3):

.. math::  x'(t) = A x(t) + B u(t), \\quad y(t) = 2\\,\\mathrm{Re}(C x(t)) + D u(t).

Discretisation (SSM.md §4.1, S4D eq. 5/6) with ``dtA = dt * A``:

* ZOH (S4D default): ``dA = exp(dtA)``, ``dB = B (exp(dtA) - 1) / A``;
* bilinear: ``dA = (1 + dtA/2) / (1 - dtA/2)``, ``dB = B dt / (1 - dtA/2)``.

B is fixed to ones and folded into C (``C' = C dB``), as in the S4D reference code. The convolution
kernel is the Vandermonde product (S4D eq. 7) ``K_l = 2 Re sum_n C'_n dA_n^l`` for l = 0..L-1, and
the convolution is done by FFT padded to 2L so that it is linear, not circular. The recurrent mode
runs ``x_t = dA x_{t-1} + u_t``, ``y_t = 2 Re(C' x_t) + D u_t`` and gives the same outputs.

Initialisations of A (SSM.md §4.2, S4D §4 / Table 1), n = 0..N/2-1:

* ``"lin"``: ``A_n = -1/2 + i pi n`` (S4D-Lin);
* ``"inv"``: ``A_n = -1/2 + i (N/pi) (N/(1+2n) - 1)`` (S4D-Inv);
* ``"real"``: ``A_n = -(n+1)`` (S4D-Real, the init Mamba uses);
* ``"legs"``: the diagonal part of the DPLR HiPPO-LegS matrix (S4D-LegS), see :mod:`ssm.s4`.

The layer (:class:`S4DLayer`) follows the S4/S4D "minimal" block: SSM -> GELU -> pointwise
linear H -> 2H -> GLU. Shapes: inputs (batch, L, H) f32, outputs (batch, L, H) f32.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm import hippo

Array = jax.Array

# Registered discretisations: name -> (dtA -> (log dA, dB / B)) for diagonal A and B = 1.
DISCRETISATIONS = ("zoh", "bilinear")
INITS = ("lin", "inv", "real", "legs")
# Upper clip of Re(A): keeps every mode strictly stable (annotated-s4 ``clip(A_re, None, -1e-4)``).
_MAX_RE_A = -1e-4


def init_diag_A(init: str, N: int) -> np.ndarray:
    """Diagonal initialisation of A, one of each conjugate pair.

    Args:
      init: one of :data:`INITS`.
      N: full state size (even); N/2 complex modes are returned.

    Returns:
      complex128[N/2] eigenvalues with ``Re < 0`` and ``Im <= 0`` for ``"legs"``.
    """
    if N % 2:
        raise ValueError(
            f"d_state must be even for the conjugate-pair S4D parameterisation, got {N}"
        )
    n = np.arange(N // 2, dtype=np.float64)
    if init == "lin":
        return -0.5 + 1j * np.pi * n
    if init == "inv":
        return -0.5 + 1j * (N / np.pi) * (N / (1 + 2 * n) - 1)
    if init == "real":
        return -(n + 1) + 0j
    if init == "legs":
        return hippo.make_dplr_legs(N).Lambda
    raise ValueError(f"unknown S4D init {init!r}; registered inits: {list(INITS)}")


def discretize(dtA: Array, dt: Array, disc: str) -> tuple[Array, Array]:
    """Diagonal discretisation (SSM.md §4.1).

    Args:
      dtA: complex64[..., N/2] ``dt * A``.
      dt: f32 broadcastable to dtA.
      disc: ``"zoh"`` or ``"bilinear"``.

    Returns:
      ``(dA, dB)``, complex64[..., N/2], with B = 1: ``dB`` is the discrete input matrix per mode.
    """
    if disc == "zoh":
        dA = jnp.exp(dtA)
        # (exp(dtA) - 1) / A = dt * (exp(dtA) - 1) / dtA; written with dt so it is exact at A->0.
        dB = dt * (dA - 1.0) / dtA
        return dA, dB
    if disc == "bilinear":
        denom = 1.0 - dtA / 2.0
        return (1.0 + dtA / 2.0) / denom, dt / denom
    raise ValueError(f"unknown discretisation {disc!r}; registered: {list(DISCRETISATIONS)}")


def vandermonde_kernel(Cp: Array, dA: Array, L: int) -> Array:
    """S4D convolution kernel ``K[h, l] = 2 Re sum_n Cp[h, n] dA[h, n]^l`` (S4D eq. 7).

    The powers are taken as ``exp(l log dA)`` (the reference's ``log_vandermonde``), which
    materialises (H, N/2, L) complex values: fine for the CPU-sized models here.

    Args:
      Cp: complex64[H, N/2] C with dB folded in.
      dA: complex64[H, N/2].
      L: kernel length.

    Returns:
      f32[H, L].
    """
    log_dA = jnp.log(dA)
    powers = jnp.exp(log_dA[..., None] * jnp.arange(L, dtype=jnp.float32))  # (H, N/2, L)
    return 2.0 * jnp.einsum("hn,hnl->hl", Cp, powers).real


def fft_conv(u: Array, K: Array) -> Array:
    """Causal convolution ``y[b, t, h] = sum_{k<=t} K[h, k] u[b, t-k, h]`` by FFT padded to 2L.

    Args:
      u: f32[batch, L, H].
      K: f32[H, L].

    Returns:
      f32[batch, L, H].
    """
    L = u.shape[-2]
    n = 2 * L  # zero padding to 2L turns the circular FFT convolution into a linear one.
    uf = jnp.fft.rfft(u.astype(jnp.float32), n=n, axis=-2)
    kf = jnp.fft.rfft(K.T.astype(jnp.float32), n=n, axis=-2)
    return jnp.fft.irfft(uf * kf, n=n, axis=-2)[..., :L, :]


def log_dt_init(dt_min: float, dt_max: float) -> Callable:
    """``log dt ~ U[log dt_min, log dt_max]`` per channel (SSM.md §4.1)."""

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, dtype)
        return u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)

    return init


class S4DCache(NamedTuple):
    """Recurrent state of one S4D layer: ``x`` complex64[batch, H, N/2]."""

    x: Array


class GLUOutput(nn.Module):
    """GELU -> pointwise Dense(H -> 2H) -> GLU (the S4/S4D block's output mixing)."""

    d_model: int
    dtype: jnp.dtype = jnp.float32  # compute dtype of the Dense (params f32)

    @nn.compact
    def __call__(self, y: Array) -> Array:
        y = nn.gelu(y).astype(self.dtype)
        y = nn.Dense(2 * self.d_model, dtype=self.dtype, name="out")(y)
        a, b = jnp.split(y, 2, axis=-1)
        return a * jax.nn.sigmoid(b)


class S4DKernel(nn.Module):
    """Parameters of H diagonal SSMs and their discretisation.

    Parameters: ``log_dt`` f32[H]; ``log_neg_A_re``, ``A_im`` f32[H, N/2] (``Re A = -exp(.)``,
    clipped to <= -1e-4); ``C`` f32[H, N/2, 2] (real/imag, complex normal with variance 1/2 per
    part as in the S4D reference).
    """

    d_model: int
    d_state: int = 64
    a_init: str = "lin"
    disc: str = "zoh"
    dt_min: float = 0.001
    dt_max: float = 0.1

    def setup(self):
        H, N = self.d_model, self.d_state
        A0 = init_diag_A(self.a_init, N)
        self.log_dt = self.param("log_dt", log_dt_init(self.dt_min, self.dt_max), (H,))
        self.log_neg_A_re = self.param(
            "log_neg_A_re",
            lambda k, s: jnp.broadcast_to(jnp.log(-A0.real).astype(jnp.float32), s),
            (H, N // 2),
        )
        self.A_im = self.param(
            "A_im", lambda k, s: jnp.broadcast_to(A0.imag.astype(jnp.float32), s), (H, N // 2)
        )
        self.C = self.param(
            "C", lambda k, s: jax.random.normal(k, s) * math.sqrt(0.5), (H, N // 2, 2)
        )

    def discrete(self) -> tuple[Array, Array]:
        """Returns ``(dA, C')`` complex64[H, N/2] with ``C' = C * dB``."""
        A = jnp.minimum(-jnp.exp(self.log_neg_A_re), _MAX_RE_A) + 1j * self.A_im
        dt = jnp.exp(self.log_dt)[:, None]
        dA, dB = discretize(dt * A, dt, self.disc)
        C = self.C[..., 0] + 1j * self.C[..., 1]
        return dA, C * dB

    def kernel(self, L: int) -> Array:
        dA, Cp = self.discrete()
        return vandermonde_kernel(Cp, dA, L)


class S4DLayer(nn.Module):
    """S4D mixer: ``y = GLU(GELU(K * u + D u))`` with ``K`` the Vandermonde kernel.

    ``__call__``: (batch, L, H) -> (batch, L, H), convolution mode (FFT padded to 2L).
    ``step``: one token (batch, H) with :class:`S4DCache`, recurrent mode, same outputs.
    """

    d_model: int
    d_state: int = 64
    a_init: str = "lin"
    disc: str = "zoh"
    dt_min: float = 0.001
    dt_max: float = 0.1
    dtype: jnp.dtype = jnp.float32  # the GLU's compute dtype; the SSM/FFT run in f32/complex64

    def setup(self):
        self.ssm = S4DKernel(
            self.d_model, self.d_state, self.a_init, self.disc, self.dt_min, self.dt_max
        )
        self.D = self.param("D", nn.initializers.normal(1.0), (self.d_model,))
        self.glu = GLUOutput(self.d_model, self.dtype)

    def __call__(self, u: Array) -> Array:
        u = u.astype(jnp.float32)
        K = self.ssm.kernel(u.shape[-2])
        y = fft_conv(u, K) + self.D * u
        return self.glu(y)

    def prefill(self, u: Array, cache: S4DCache | None = None) -> tuple[Array, S4DCache]:
        """Convolution mode over a chunk plus the recurrent state after it, in parallel:
        ``x_L = dA^L x_0 + sum_t dA^(L-1-t) u_t`` (a transposed Vandermonde product, the
        reference's ``forward_state``) and the incoming state's output term
        ``2 Re(C' dA^(t+1) x_0)``. u: [batch, L, H]; returns ``(y [batch, L, H], S4DCache)``."""
        u = u.astype(jnp.float32)
        L = u.shape[-2]
        dA, Cp = self.ssm.discrete()
        powers = jnp.exp(jnp.log(dA)[..., None] * jnp.arange(L + 1, dtype=jnp.float32))
        y = fft_conv(u, vandermonde_kernel(Cp, dA, L)) + self.D * u
        x = jnp.einsum("hnl,blh->bhn", powers[..., L - 1 :: -1], u.astype(jnp.complex64))
        if cache is not None:
            y = y + 2.0 * jnp.einsum("hn,hnl,bhn->blh", Cp, powers[..., 1:], cache.x).real
            x = x + powers[..., L] * cache.x
        return self.glu(y), S4DCache(x)

    def step(self, u: Array, cache: S4DCache) -> tuple[Array, S4DCache]:
        u = u.astype(jnp.float32)
        dA, Cp = self.ssm.discrete()
        x = dA * cache.x + u.astype(jnp.complex64)[..., None]
        y = 2.0 * jnp.einsum("hn,bhn->bh", Cp, x).real + self.D * u
        return self.glu(y), S4DCache(x)


def init_s4d_cache(batch: int, d_model: int, d_state: int) -> S4DCache:
    return S4DCache(jnp.zeros((batch, d_model, d_state // 2), jnp.complex64))
