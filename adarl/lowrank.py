"""Rank adaptation of AdaRL (arXiv 2510.11899 §4.2, Eq. 14, Eq. 16, App. A.2.1; ADARL.md §2.4, §5.2).

Every ``d_t`` gradient steps the effective kernel ``K = (A ⊙ m) B`` of each factorised layer is
decomposed ``K = U Σ Vᵀ``, a new rank r̂ is chosen by a *rank rule*, and the factors are projected
onto the best rank-r̂ approximation (Eckart–Young):

    A ← U[:, :r̂] sqrt(Σ[:r̂]),     B ← sqrt(Σ[:r̂]) Vᵀ[:r̂, :],     m ← arange(R) < r̂.

Rank rules (registry, ``get_rank_rule(name)``), each ``(s, rank, beta) -> r̂`` with s f32 (R,) the
descending singular values of K (zeros beyond ``rank``), rank i32 () the current rank:

* ``"eq14"`` (paper's main rule): r̂ = max{ℓ ≥ 1 : Σ_{i≤ℓ} σ_i / Σ_i σ_i ≤ β}; plain sums (nuclear
  norm). If the set is empty (σ₁ alone exceeds β of the sum) the previous rank is kept, as [P]
  says ("we simply retain the previous rank").
* ``"eq16"`` (ablation): r̂ = min{ℓ : σ_ℓ / σ₁ ≤ β}; kept rank if no such ℓ.
* ``"energy"``: r̂ = min{ℓ : Σ_{i≤ℓ} σ_i² / Σ_i σ_i² ≥ β} (the usual squared-energy rule).

The result is always clipped to ``[1, rank]``: a rank never grows (ADARL.md §6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

import harness
from adarl import networks

RankRule = Callable[[jax.Array, jax.Array, float], jax.Array]
RANK_RULES: harness.Registry[RankRule] = harness.Registry("rank rule")


def register_rank_rule(name: str) -> Callable[[RankRule], RankRule]:
    """Decorator adding a rank rule under ``name``; duplicate names raise ValueError."""
    return RANK_RULES.register(name)


def rank_rule_names() -> tuple[str, ...]:
    return tuple(sorted(RANK_RULES))


def get_rank_rule(name: str) -> RankRule:
    """Returns the rule registered under ``name``; unknown -> ValueError listing the names."""
    if name not in RANK_RULES:
        raise ValueError(f"unknown rank rule '{name}'; registered: {', '.join(rank_rule_names())}")
    return RANK_RULES.get(name)


def _safe_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    return num / jnp.maximum(den, jnp.finfo(num.dtype).tiny)


@register_rank_rule("eq14")
def eq14_rule(s: jax.Array, rank: jax.Array, beta: float) -> jax.Array:
    """Paper Eq. 14: the largest ℓ whose cumulative singular-value ratio is <= β."""
    ratio = _safe_ratio(jnp.cumsum(s), jnp.sum(s))
    ok = ratio <= beta
    ell = jnp.arange(1, s.shape[0] + 1)
    r_hat = jnp.max(jnp.where(ok, ell, 0))
    return jnp.where(r_hat >= 1, r_hat, rank).astype(jnp.int32)


@register_rank_rule("eq16")
def eq16_rule(s: jax.Array, rank: jax.Array, beta: float) -> jax.Array:
    """Paper Eq. 16 (ablation): the smallest ℓ with σ_ℓ/σ₁ <= β."""
    ok = _safe_ratio(s, s[0]) <= beta
    ell = jnp.arange(1, s.shape[0] + 1)
    r_hat = jnp.min(jnp.where(ok, ell, s.shape[0] + 1))
    return jnp.where(r_hat <= s.shape[0], r_hat, rank).astype(jnp.int32)


@register_rank_rule("energy")
def energy_rule(s: jax.Array, rank: jax.Array, beta: float) -> jax.Array:
    """Squared-energy rule: the smallest ℓ keeping a fraction >= β of Σσ²."""
    ratio = _safe_ratio(jnp.cumsum(s**2), jnp.sum(s**2))
    # 1e-6 slack: the full sum's ratio is 1 up to rounding and must count as >= beta = 1.
    ok = ratio >= beta - 1e-6
    ell = jnp.arange(1, s.shape[0] + 1)
    return jnp.min(jnp.where(ok, ell, s.shape[0])).astype(jnp.int32)


def choose_rank(s: jax.Array, rank: jax.Array, rule: str, beta: float) -> jax.Array:
    """Applies the named rule and clips to ``[1, rank]`` (ranks never grow)."""
    r_hat = get_rank_rule(rule)(s, rank, beta)
    return jnp.clip(r_hat, 1, rank).astype(jnp.int32)


class Projection(NamedTuple):
    """Result of projecting one factorised layer.

    a: f32 (in, R); b: f32 (R, out); rank: i32 () new rank; singular_values: f32 (min(in,out),)
    of the kernel *before* projection.
    """

    a: jax.Array
    b: jax.Array
    rank: jax.Array
    singular_values: jax.Array


def project_factors(a: jax.Array, b: jax.Array, new_rank: jax.Array) -> tuple[jax.Array, ...]:
    """Best rank-``new_rank`` factors of ``A B`` (masking already applied to ``a``).

    Returns (A', B', s) with A' f32 (in, R), B' f32 (R, out) zero beyond ``new_rank`` and the
    singular values s f32 (min(in, out),) of ``A B``.
    """
    u, s, vt = jnp.linalg.svd(a @ b, full_matrices=False)
    a_new, b_new = _factors_from_svd(u, s, vt, new_rank, a, b)
    return a_new, b_new, s


def _factors_from_svd(u, s, vt, new_rank, a, b):
    k = min(a.shape[-1], s.shape[0])
    root = jnp.sqrt(s[:k]) * (jnp.arange(k) < new_rank).astype(a.dtype)
    a_new = jnp.zeros_like(a).at[:, :k].set(u[:, :k] * root)
    b_new = jnp.zeros_like(b).at[:k].set(root[:, None] * vt[:k])
    return a_new, b_new


def align_factors(
    a: jax.Array, b: jax.Array, a_ref: jax.Array, rank: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Rotates the factors of ``A B`` onto ``a_ref`` without changing the product (Procrustes).

    Two SVD projections of nearby kernels can pick singular vectors of opposite sign or rotated
    inside near-degenerate subspaces; Polyak-averaging such factors averages ``A₁B₁`` and
    ``A₂B₂`` term by term and destroys the kernel. The orthogonal R = argmin ‖A R − A_ref‖_F
    (the polar factor of Aᵀ A_ref, Schönemann 1966) acts on the first ``rank`` columns only
    (identity on the masked ones), so ``(A R)(Rᵀ B) = A B`` also under the rank mask.

    Args:
      a, a_ref: f32 (in, R), zero beyond ``rank``; b: f32 (R, out); rank: i32 ().
    Returns:
      (A R, Rᵀ B) with the shapes of (a, b).
    """
    mask = networks.rank_mask(rank, a.shape[-1], a.dtype)
    m = (a.T @ a_ref) * mask[:, None] * mask[None, :] + jnp.diag(1.0 - mask)
    u, _, vt = jnp.linalg.svd(m)
    r = u @ vt
    return a @ r, r.T @ b


def project_layer(
    layer: dict, rank: jax.Array, rule: str, beta: float, enabled: jax.Array | bool = True
) -> Projection:
    """SVD-projects one LowRankDense layer dict (``A``, ``B``, ``bias``) by the named rule.

    ``enabled`` False keeps the rank (the factors are still re-balanced to U·sqrt(Σ), sqrt(Σ)·Vᵀ,
    which leaves the product unchanged).
    """
    rank_max = layer["A"].shape[-1]
    a = layer["A"] * networks.rank_mask(rank, rank_max, layer["A"].dtype)
    u, s, vt = jnp.linalg.svd(a @ layer["B"], full_matrices=False)
    padded = jnp.zeros((max(rank_max, s.shape[0]),), s.dtype).at[: s.shape[0]].set(s)
    new_rank = jnp.where(enabled, choose_rank(padded[:rank_max], rank, rule, beta), rank)
    a_new, b_new = _factors_from_svd(u, s, vt, new_rank, a, layer["B"])
    return Projection(a_new, b_new, new_rank.astype(jnp.int32), s)


def project_mlp(
    mlp_params: dict, ranks: jax.Array, rule: str, beta: float
) -> tuple[dict, jax.Array, list[jax.Array]]:
    """Projects every factorised layer of one MLP.

    Args:
      mlp_params: the MLP's param dict (``hidden_i`` entries). ranks: i32 (L,).
    Returns:
      (new params, new ranks i32 (L,), singular values per layer before projection).
    """
    new = dict(mlp_params)
    new_ranks, spectra = [], []
    for j, name in enumerate(networks.factorised_layer_names(mlp_params)):
        proj = project_layer(mlp_params[name], ranks[j], rule, beta)
        new[name] = {**mlp_params[name], "A": proj.a, "B": proj.b}
        new_ranks.append(proj.rank)
        spectra.append(proj.singular_values)
    return new, jnp.stack(new_ranks) if new_ranks else ranks, spectra


def project_critics(
    critic_mlp_params: dict, ranks: jax.Array, rule: str, beta: float
) -> tuple[dict, jax.Array, list[jax.Array]]:
    """:func:`project_mlp` vmapped over the leading critic axis (C,). ranks: i32 (C, L)."""
    return jax.vmap(lambda p, r: project_mlp(p, r, rule, beta))(critic_mlp_params, ranks)


def spectra(mlp_params: dict, ranks: jax.Array) -> list[jax.Array]:
    """Singular values of each factorised layer's effective kernel (descending)."""
    out = []
    for j, name in enumerate(networks.factorised_layer_names(mlp_params)):
        k = networks.effective_kernel(mlp_params[name], ranks[j])
        out.append(jnp.linalg.svd(k, compute_uv=False))
    return out
