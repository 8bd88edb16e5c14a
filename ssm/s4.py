"""S4: structured state space with a diagonal-plus-low-rank (DPLR) A (Gu, Goel, Re 2022,
"Efficiently Modeling Long Sequences with Structured State Spaces", arXiv 2111.00396).

HiPPO-LegS (S4 eq. 2; SSM.md §4.2)::

    A_nk = -sqrt(2n+1) sqrt(2k+1)   (n > k),   -(n+1)   (n = k),   0   (n < k);   B_n = sqrt(2n+1).

NPLR form (S4 Thm. 1): with ``P_n = sqrt(n + 1/2)``, ``S = A + P P^T`` is normal (skew-symmetric
plus -1/2 I), ``S = V Lambda V^*``, so ``A = V (Lambda - (V^*P)(V^*P)^*) V^*``: in the eigenbasis A is
``Lambda - P~ P~^*`` (DPLR). Eigenvalues come in conjugate pairs; one of each pair is stored
(the half with ``Im <= 0``) and the other is recovered by conjugation, which keeps the system real.

Convolution mode (S4 Alg. 1, SSM.md §4.3): bilinear discretisation, the truncated generating
function evaluated at the L roots of unity with a **Cauchy kernel** ``sum_n v_n / (g - lambda_n)``
and the rank-1 **Woodbury** correction ``k00 - k01 k10 / (1 + k11)``, times ``2 / (1 + omega)``,
then an inverse FFT. The learned output matrix is ``C~ = C (I - dA^L)`` (S4 §3.3), so the kernel
of length L needs no matrix power. Recurrent mode (S4 eq. 3 with the DPLR bilinear
``dA = A1 A0``, ``A0 = 2/dt I + A``, A1 the Woodbury inverse of ``2/dt I - A``) uses
``C = C~ (I - dA^L)^{-1}``; the two modes agree when the recurrence is run for at most L steps
(``S4Layer.l_max``), which the tests check.

Discretisation: the DPLR generating-function trick needs the bilinear transform, so S4 is bilinear
(as in the paper); ZOH is available for the diagonal S4D (:mod:`ssm.s4d`).

The layer is the same block as S4D: SSM -> GELU -> Dense(H -> 2H) -> GLU, (batch, L, H) f32.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ssm import hippo, s4d

Array = jax.Array


def _full(x: Array) -> Array:
    """Appends the conjugate half along the last axis."""
    return jnp.concatenate([x, jnp.conj(x)], axis=-1)


def cauchy(v: Array, g: Array, lam: Array) -> Array:
    """Cauchy kernel ``out[..., l] = sum_n v[..., n] / (g[l] - lam[..., n])`` (S4 §3.3).

    Args:
      v, lam: complex[..., N]; g: complex[L].

    Returns:
      complex[..., L]. Naive O(N L) memory, fine for CPU-sized N and L.
    """
    return jnp.sum(v[..., None, :] / (g[:, None] - lam[..., None, :]), axis=-1)


def kernel_dplr(Lambda: Array, P: Array, B: Array, Ct: Array, dt: Array, L: int) -> Array:
    """S4 convolution kernel from the DPLR parameters (S4 Alg. 1; annotated-s4 ``kernel_DPLR``).

    Args:
      Lambda, P, B: complex64[H, N/2] (one of each conjugate pair; Q = P for HiPPO).
      Ct: complex64[H, N/2] the learned ``C~ = C (I - dA^L)``.
      dt: f32[H] step sizes.
      L: kernel length.

    Returns:
      f32[H, L], the bilinear-discretised kernel ``K_l = C dA^l dB``.
    """
    Lambda, P, B, Ct = _full(Lambda), _full(P), _full(B), _full(Ct)
    omega = jnp.exp(-2j * jnp.pi * jnp.arange(L) / L)
    dt = dt[:, None]
    g = (2.0 / dt) * ((1.0 - omega) / (1.0 + omega))  # (H, L)
    c = 2.0 / (1.0 + omega)

    def one_channel(lam, p, b, ct, gh):
        k00 = cauchy(ct.conj() * b, gh, lam)
        k01 = cauchy(ct.conj() * p, gh, lam)
        k10 = cauchy(p.conj() * b, gh, lam)
        k11 = cauchy(p.conj() * p, gh, lam)
        return c * (k00 - k01 * (1.0 / (1.0 + k11)) * k10)

    at_roots = jax.vmap(one_channel)(Lambda, P, B, Ct, g)
    return jnp.fft.ifft(at_roots, n=L, axis=-1).real.astype(jnp.float32)


def discrete_dplr(Lambda: Array, P: Array, B: Array, Ct: Array, dt: Array, L: int):
    """Bilinear recurrent matrices of one DPLR SSM (S4 eq. 3 and §3.3; annotated-s4
    ``discrete_DPLR``), on the full conjugate-symmetric state.

    Args:
      Lambda, P, B, Ct: complex64[N/2]; dt: f32 scalar; L: the kernel length C~ was defined for.

    Returns:
      ``(dA complex64[N, N], dB complex64[N], C complex64[N])`` with
      ``K_l = Re(C dA^l dB)`` equal to :func:`kernel_dplr`.
    """
    Lambda, P, B, Ct = _full(Lambda), _full(P), _full(B), _full(Ct)
    N = Lambda.shape[0]
    eye = jnp.eye(N, dtype=Lambda.dtype)
    A = jnp.diag(Lambda) - jnp.outer(P, P.conj())
    A0 = (2.0 / dt) * eye + A
    Dm = jnp.diag(1.0 / ((2.0 / dt) - Lambda))
    Qc = P.conj()[None, :]
    P2 = P[:, None]
    A1 = Dm - (Dm @ P2 * (1.0 / (1.0 + (Qc @ Dm @ P2))) * Qc @ Dm)
    dA = A1 @ A0
    dB = 2.0 * A1 @ B
    # Row vector C with C (I - dA^L) = C~^* (the generating function uses C~^*, S4 Alg. 1).
    C = jnp.linalg.solve((eye - jnp.linalg.matrix_power(dA, L)).T, Ct.conj())
    return dA, dB, C


class S4Cache(NamedTuple):
    """Recurrent state of one S4 layer: ``x`` complex64[batch, H, N] (full conjugate state).

    ``dA, dB, C``: the per-channel recurrent matrices (see :meth:`S4Layer.discrete`), filled in
    by :meth:`S4Layer.prefill` so that :meth:`S4Layer.step` does not redo the matrix power and
    the solve for every token; ``None`` (the zero cache) makes step compute them.
    """

    x: Array
    dA: Array | None = None
    dB: Array | None = None
    C: Array | None = None


class S4Layer(nn.Module):
    """S4 mixer (DPLR, HiPPO-LegS init, bilinear): ``y = GLU(GELU(K * u + D u))``.

    Parameters per channel (H of them, all initialised from the same HiPPO-LegS DPLR, as in the
    reference): ``Lambda_re`` (stored as ``log(-Re)``), ``Lambda_im``, ``P``, ``B`` (f32[H, N/2, 2]
    real/imag), ``Ct`` (complex normal, variance 1/2 per part), ``log_dt`` f32[H], ``D`` f32[H].

    ``l_max`` is the length C~ is defined for: the convolution kernel has length ``L <= l_max``
    (the first L taps of the l_max kernel) and the recurrence is exact for ``l_max`` steps.
    """

    d_model: int
    d_state: int = 64
    l_max: int = 1024
    dt_min: float = 0.001
    dt_max: float = 0.1
    dtype: jnp.dtype = jnp.float32  # the GLU's compute dtype; the SSM/FFT run in f32/complex64

    def setup(self):
        H, N = self.d_model, self.d_state
        dplr = hippo.make_dplr_legs(N)

        def const(x):
            return lambda k, s: jnp.broadcast_to(jnp.asarray(x, jnp.float32), s)

        def cplx(x):
            return np.stack([np.real(x), np.imag(x)], axis=-1)

        self.log_neg_Lambda_re = self.param(
            "log_neg_Lambda_re", const(np.log(-dplr.Lambda.real)), (H, N // 2)
        )
        self.Lambda_im = self.param("Lambda_im", const(dplr.Lambda.imag), (H, N // 2))
        self.P = self.param("P", const(cplx(dplr.P)), (H, N // 2, 2))
        self.B = self.param("B", const(cplx(dplr.B)), (H, N // 2, 2))
        self.Ct = self.param(
            "Ct", lambda k, s: jax.random.normal(k, s) * math.sqrt(0.5), (H, N // 2, 2)
        )
        self.log_dt = self.param("log_dt", s4d.log_dt_init(self.dt_min, self.dt_max), (H,))
        self.D = self.param("D", nn.initializers.normal(1.0), (H,))
        self.glu = s4d.GLUOutput(self.d_model, self.dtype)

    def _ssm(self):
        def c(x):
            return x[..., 0] + 1j * x[..., 1]

        Lambda = jnp.minimum(-jnp.exp(self.log_neg_Lambda_re), -1e-4) + 1j * self.Lambda_im
        return Lambda, c(self.P), c(self.B), c(self.Ct), jnp.exp(self.log_dt)

    def kernel(self, L: int) -> Array:
        if L > self.l_max:
            raise ValueError(f"sequence length {L} exceeds the S4 layer's l_max={self.l_max}")
        return kernel_dplr(*self._ssm(), self.l_max)[:, :L]

    def __call__(self, u: Array) -> Array:
        u = u.astype(jnp.float32)
        K = self.kernel(u.shape[-2])
        y = s4d.fft_conv(u, K) + self.D * u
        return self.glu(y)

    def prefill(self, u: Array, cache: S4Cache | None = None) -> tuple[Array, S4Cache]:
        """Convolution mode over a chunk, the state after it, and the recurrent matrices.

        The outputs from a zero state come from the FFT convolution; the final state
        ``x_L = dA^L x_0 + sum_t dA^(L-1-t) dB u_t`` and the incoming state's output term
        ``Re(C dA^(t+1) x_0)`` come from one linear ``lax.scan`` of N x N products (the dense
        DPLR ``dA`` has no cheap closed-form powers here). u: [batch, L, H]."""
        u = u.astype(jnp.float32)
        dA, dB, C = self.discrete()
        y = s4d.fft_conv(u, self.kernel(u.shape[-2])) + self.D * u
        x0 = jnp.zeros((u.shape[0], *dB.shape), jnp.complex64) if cache is None else cache.x

        def body(carry, ut):
            x, w = carry
            x = jnp.einsum("hnm,bhm->bhn", dA, x) + dB * ut.astype(jnp.complex64)[..., None]
            w = jnp.einsum("hnm,bhm->bhn", dA, w)
            return (x, w), jnp.einsum("hn,bhn->bh", C, w).real

        (x, _), y0 = jax.lax.scan(body, (x0, x0), jnp.moveaxis(u, 1, 0))
        y = y + jnp.moveaxis(y0, 0, 1)
        return self.glu(y), S4Cache(x, dA, dB, C)

    def discrete(self):
        """Per-channel ``(dA [H, N, N], dB [H, N], C [H, N])`` complex64."""
        fn = jax.vmap(discrete_dplr, in_axes=(0, 0, 0, 0, 0, None))
        return fn(*self._ssm(), self.l_max)

    def step(self, u: Array, cache: S4Cache) -> tuple[Array, S4Cache]:
        u = u.astype(jnp.float32)
        if cache.dA is None:
            dA, dB, C = self.discrete()
        else:
            dA, dB, C = cache.dA, cache.dB, cache.C
        x = jnp.einsum("hnm,bhm->bhn", dA, cache.x) + dB * u.astype(jnp.complex64)[..., None]
        y = jnp.einsum("hn,bhn->bh", C, x).real + self.D * u
        return self.glu(y), cache._replace(x=x)


def init_s4_cache(batch: int, d_model: int, d_state: int) -> S4Cache:
    return S4Cache(jnp.zeros((batch, d_model, d_state), jnp.complex64))
