"""HiPPO-LegS and its normal-plus-low-rank / diagonal-plus-low-rank forms (Gu, Goel, Re 2022,
"Efficiently Modeling Long Sequences with Structured State Spaces", arXiv 2111.00396, eq. 2 and
Thm. 1; SSM.md §4.2).

A leaf of :mod:`ssm`: both :mod:`ssm.s4` (the DPLR kernel) and :mod:`ssm.s4d` (the ``"legs"``
diagonal initialisation) build on it. Everything here is NumPy float64/complex128, computed once
at parameter initialisation.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def make_hippo_legs(N: int) -> tuple[np.ndarray, np.ndarray]:
    """HiPPO-LegS ``(A f64[N, N], B f64[N])`` (S4 eq. 2), with the sign convention ``x' = A x + B u``."""
    p = np.sqrt(1 + 2 * np.arange(N))
    A = p[:, None] * p[None, :]
    A = np.tril(A) - np.diag(np.arange(N))
    return -A, p.copy()


def make_nplr_legs(N: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(A, P f64[N], B f64[N])`` with ``A + P P^T`` normal (S4 Thm. 1)."""
    A, B = make_hippo_legs(N)
    P = np.sqrt(np.arange(N) + 0.5)
    return A, P, B


class DPLR(NamedTuple):
    """Diagonal-plus-low-rank HiPPO-LegS in its eigenbasis, one of each conjugate pair.

    ``Lambda``, ``P``, ``B``: complex128[N/2]; ``V``: complex128[N, N/2] (eigenvectors kept).
    With ``full(x) = concat(x, conj x)``: ``V_full diag(full Lambda) V_full^* - (V_full full P)
    (V_full full P)^* = A`` (the HiPPO matrix).
    """

    Lambda: np.ndarray
    P: np.ndarray
    B: np.ndarray
    V: np.ndarray


def make_dplr_legs(N: int) -> DPLR:
    """Diagonalises the normal part of HiPPO-LegS (reference ``nplr``; annotated-s4
    ``make_DPLR_HiPPO``), keeping the N/2 eigenvalues with negative imaginary part."""
    if N % 2:
        raise ValueError(f"d_state must be even for the conjugate-pair DPLR form, got {N}")
    A, P, B = make_nplr_legs(N)
    S = A + P[:, None] * P[None, :]
    # S = -1/2 I + skew: the real part of every eigenvalue is the diagonal mean, the imaginary part
    # comes from the Hermitian matrix -i * S (more accurate than a general eig).
    Lambda_re = np.mean(np.diagonal(S)) * np.ones(N)
    Lambda_im, V = np.linalg.eigh(S * -1j)
    order = np.argsort(Lambda_im)
    Lambda_im, V = Lambda_im[order], V[:, order]
    keep = slice(0, N // 2)  # the half with Im <= 0 (the S4 kernel asserts A.imag <= 0)
    Lambda = (Lambda_re + 1j * Lambda_im)[keep]
    V = V[:, keep]
    Vc = V.conj().T
    return DPLR(Lambda=Lambda, P=Vc @ P, B=Vc @ B, V=V)
