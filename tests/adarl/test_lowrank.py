"""Low-rank layers, rank rules (AdaRL Eq. 14 / Eq. 16 / energy), projection and Parseval."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adarl import lowrank, networks, parseval


def _factors(key, d_in=12, rank_max=10, d_out=9):
    ka, kb = jax.random.split(key)
    return jax.random.normal(ka, (d_in, rank_max)), jax.random.normal(kb, (rank_max, d_out))


# ---------------------------------------------------------------------------------------------
# Projection (Eckart–Young)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("new_rank", [1, 3, 7])
def test_projection_is_best_rank_r_approximation(new_rank):
    a, b = _factors(jax.random.PRNGKey(new_rank))
    a_new, b_new, s = lowrank.project_factors(a, b, jnp.int32(new_rank))
    k = np.asarray(a @ b, np.float64)
    proj = np.asarray(a_new @ b_new, np.float64)
    # rank <= r̂, and the factors are zero beyond r̂ (so the mask can drop them).
    assert np.linalg.matrix_rank(proj, tol=1e-4) <= new_rank
    assert np.all(np.asarray(a_new)[:, new_rank:] == 0) and np.all(
        np.asarray(b_new)[new_rank:] == 0
    )
    # Eckart–Young: the truncated SVD, whose error is sqrt(Σ_{i>r} σ_i²).
    u, sv, vt = np.linalg.svd(k, full_matrices=False)
    best = (u[:, :new_rank] * sv[:new_rank]) @ vt[:new_rank]
    np.testing.assert_allclose(proj, best, atol=2e-4 * sv[0])
    np.testing.assert_allclose(
        np.linalg.norm(k - proj), np.sqrt(np.sum(sv[new_rank:] ** 2)), rtol=1e-3
    )
    np.testing.assert_allclose(np.asarray(s), sv, rtol=1e-4)
    # Balanced factors: A'ᵀA' = B'B'ᵀ = diag(σ_1..σ_r̂) (W1 = U sqrt(Σ), W2 = sqrt(Σ) Vᵀ).
    np.testing.assert_allclose(
        np.asarray(a_new.T @ a_new)[:new_rank, :new_rank], np.diag(sv[:new_rank]), atol=1e-3 * sv[0]
    )
    np.testing.assert_allclose(
        np.asarray(b_new @ b_new.T)[:new_rank, :new_rank], np.diag(sv[:new_rank]), atol=1e-3 * sv[0]
    )


def test_project_layer_uses_rule_and_current_mask():
    a, b = _factors(jax.random.PRNGKey(0), 8, 8, 8)
    layer = {"A": a, "B": b, "bias": jnp.zeros(8)}
    proj = lowrank.project_layer(layer, jnp.int32(5), "eq14", 0.98)
    masked = np.asarray(a * (jnp.arange(8) < 5) @ b)
    sv = np.linalg.svd(masked, compute_uv=False)
    assert np.sum(sv > 1e-5) == 5  # the current mask is applied before the SVD
    ratio = np.cumsum(sv) / sv.sum()
    expected = max(i + 1 for i in range(8) if ratio[i] <= 0.98)
    assert int(proj.rank) == min(expected, 5) < 5


# ---------------------------------------------------------------------------------------------
# Rank rules on spectra with known answers
# ---------------------------------------------------------------------------------------------

# s = (4, 3, 2, 1): cumulative plain ratios 0.4, 0.7, 0.9, 1.0; σ_i/σ_1 = 1, .75, .5, .25;
# squared energy (16, 9, 4, 1)/30: 0.533, 0.833, 0.967, 1.0.
S4 = jnp.array([4.0, 3.0, 2.0, 1.0])


@pytest.mark.parametrize(
    "rule, s, rank, beta, expected",
    [
        ("eq14", S4, 4, 0.98, 3),  # largest ℓ with ratio <= β: 0.9 <= 0.98 < 1.0
        ("eq14", S4, 4, 0.95, 3),
        ("eq14", S4, 4, 0.85, 2),
        ("eq14", S4, 4, 0.30, 4),  # empty set: keep the previous rank ([P])
        ("eq14", S4, 2, 0.98, 2),  # never above the current rank
        ("eq14", jnp.array([4.0, 3.0, 0.0, 0.0]), 2, 0.98, 1),  # 4/7 <= .98 < 1
        ("eq14", jnp.ones(4), 4, 0.98, 3),  # flat spectrum drops by one
        ("eq16", S4, 4, 0.98, 2),  # smallest ℓ with σ_ℓ/σ₁ <= β
        ("eq16", S4, 4, 0.6, 3),
        ("eq16", jnp.ones(4), 4, 0.98, 4),  # no such ℓ: keep
        ("energy", S4, 4, 0.98, 4),
        ("energy", S4, 4, 0.95, 3),
        ("energy", S4, 4, 0.80, 2),
        ("energy", S4, 4, 0.50, 1),
    ],
)
def test_rank_rules_known_answers(rule, s, rank, beta, expected):
    got = lowrank.choose_rank(s, jnp.int32(rank), rule, beta)
    assert int(got) == expected


@pytest.mark.parametrize("rule", lowrank.rank_rule_names())
def test_every_rule_stays_in_range(rule):
    s = jnp.sort(jax.random.uniform(jax.random.PRNGKey(1), (16,)))[::-1]
    for rank in (1, 5, 16):
        s_r = s * (jnp.arange(16) < rank)
        r = int(lowrank.choose_rank(s_r, jnp.int32(rank), rule, 0.98))
        assert 1 <= r <= rank


def test_unknown_rule_lists_names():
    with pytest.raises(ValueError, match="eq14"):
        lowrank.get_rank_rule("nope")
    with pytest.raises(ValueError, match="already registered"):
        lowrank.register_rank_rule("eq14")(lambda s, r, b: r)


# ---------------------------------------------------------------------------------------------
# The masked layer
# ---------------------------------------------------------------------------------------------


def test_masked_columns_get_zero_gradient_and_forward_matches_dense():
    layer = networks.LowRankDense(features=6, rank_max=5)
    x = jax.random.normal(jax.random.PRNGKey(0), (7, 4))
    params = layer.init(jax.random.PRNGKey(1), x, jnp.int32(5))
    rank = jnp.int32(3)
    p = params["params"]
    mask = jnp.arange(5) < 3
    y = layer.apply(params, x, rank)
    np.testing.assert_allclose(y, x @ ((p["A"] * mask) @ p["B"]) + p["bias"], atol=1e-5)
    g = jax.grad(lambda prm: jnp.sum(jnp.sin(layer.apply(prm, x, rank))))(params)["params"]
    assert np.all(np.asarray(g["A"])[:, 3:] == 0) and np.all(np.asarray(g["B"])[3:] == 0)
    assert np.all(np.abs(np.asarray(g["A"])[:, :3]).sum(0) > 0)
    assert np.all(np.abs(np.asarray(g["B"])[:3]).sum(1) > 0)


def test_full_rank_init_is_the_dense_init():
    """At full rank the factorised layer starts as a lecun-uniform dense layer (A B = K)."""
    layer = networks.LowRankDense(features=6, rank_max=6)
    x = jnp.ones((1, 6))
    p = layer.init(jax.random.PRNGKey(3), x, jnp.int32(6))["params"]
    k = np.asarray(p["A"] @ p["B"])
    limit = np.sqrt(3.0 / 6)  # lecun_uniform bound for fan_in 6
    assert np.abs(k).max() <= limit + 1e-5
    assert np.linalg.matrix_rank(k) == 6


# ---------------------------------------------------------------------------------------------
# Parseval (ADARL.md §7.2)
# ---------------------------------------------------------------------------------------------


def test_parseval_penalty_hand_computed():
    # K = [[1, 2], [3, 4]]: KᵀK = [[10, 14], [14, 20]]; −2I → [[8, 14], [14, 18]];
    # ‖·‖²_F = 64 + 196 + 196 + 324 = 780. With λ = 0.1 and no width factor: 78.
    k = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    assert float(parseval.orthogonality_gap(k, 2.0)) == pytest.approx(780.0)
    assert float(parseval.penalty([k], 0.1, 2.0, width_scaling=False)) == pytest.approx(78.0)
    # (64/2)² = 1024 width factor; a stacked (C, in, out) kernel sums over C.
    assert float(parseval.penalty([k], 0.1, 2.0, width_scaling=True)) == pytest.approx(78.0 * 1024)
    stacked = jnp.stack([k, jnp.eye(2)])  # eye: (1−2)²·2 = 2
    assert float(parseval.penalty([stacked], 1.0, 2.0, False)) == pytest.approx(782.0)


def test_parseval_zero_for_scaled_orthogonal():
    q, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(0), (16, 16)))
    assert float(parseval.penalty([jnp.sqrt(2.0) * q], 1.0, 2.0)) == pytest.approx(0.0, abs=1e-4)
    # (in, out) = (16, 8) with orthonormal columns: KᵀK = 2 I_8.
    tall = jnp.sqrt(2.0) * q[:, :8]
    assert float(parseval.penalty([tall], 1.0, 2.0)) == pytest.approx(0.0, abs=1e-4)
    assert float(parseval.penalty([q], 1.0, 2.0, False)) == pytest.approx(16.0, rel=1e-4)


def test_parseval_kernels_of_networks():
    """The penalty sees input->hidden and the effective hidden->hidden kernel, not the output."""
    actor = networks.Actor(action_size=2, hidden=(8, 8), low_rank=True, rank_max=8)
    ranks = jnp.array([4], jnp.int32)
    params = actor.init(jax.random.PRNGKey(0), jnp.zeros((1, 3)), ranks)
    ks = parseval.actor_kernels(params, ranks)
    assert [k.shape for k in ks] == [(3, 8), (8, 8)]
    assert np.linalg.matrix_rank(np.asarray(ks[1]), tol=1e-5) == 4
    critic = networks.Critics(num_critics=2, hidden=(8, 8), low_rank=True, rank_max=8)
    c_ranks = jnp.array([[8], [2]], jnp.int32)
    cp = critic.init(jax.random.PRNGKey(1), jnp.zeros((1, 3)), jnp.zeros((1, 2)), c_ranks)
    cks = parseval.critic_kernels(cp, c_ranks)
    assert [k.shape for k in cks] == [(2, 5, 8), (2, 8, 8)]
    assert np.linalg.matrix_rank(np.asarray(cks[1][1]), tol=1e-5) == 2
