"""adarl.dynamics: Wasserstein-ball, box, nominal and OMPO samplers; exact W_p."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from adarl import envs
from adarl.dynamics import (
    OMPO_SCHEDULES,
    make_sampler,
    wasserstein_distance,
)
from adarl.params import param_spec


@pytest.fixture(scope="module")
def spec():
    return param_spec(envs.make("cartpole"))


@pytest.fixture(scope="module")
def hopper_spec():
    return param_spec(envs.make("hopper"), ["torso_length", "foot_length"])


def _brute_force_w(x, y, p, scale):
    """W_p between equal-size equal-weight sets by enumerating all permutations."""
    x, y = np.asarray(x) / scale, np.asarray(y) / scale
    best = min(
        np.mean(np.linalg.norm(x - y[list(perm)], axis=-1) ** p)
        for perm in itertools.permutations(range(len(y)))
    )
    return best ** (1 / p)


# ---------------------------------------------------------------------------------------------
# wasserstein_distance
# ---------------------------------------------------------------------------------------------


def test_wasserstein_distance_golden_values():
    # {0, 1} -> {0.5, 1.5}: every atom moves 0.5, so W1 = W2 = 0.5.
    assert wasserstein_distance([[0.0], [1.0]], [[0.5], [1.5]], p=1) == pytest.approx(0.5)
    assert wasserstein_distance([[0.0], [1.0]], [[0.5], [1.5]], p=2) == pytest.approx(0.5)
    # Crossed pairing is never optimal: {0, 10} vs {10, 0} is W = 0.
    assert wasserstein_distance([[0.0], [10.0]], [[10.0], [0.0]], p=2) == pytest.approx(0.0)
    # Point masses: W_p = scaled Euclidean distance ((3/3)^2 + (4/2)^2)^(1/2) = sqrt(5).
    assert wasserstein_distance([[3.0, 4.0]], [[0.0, 0.0]], p=1, scale=[3.0, 2.0]) == (
        pytest.approx(np.sqrt(5.0))
    )


def test_wasserstein_distance_matches_brute_force_and_scipy():
    rng = np.random.default_rng(0)
    for p in (1, 2):
        x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
        scale = rng.uniform(0.5, 2.0, size=3)
        assert wasserstein_distance(x, y, p, scale) == pytest.approx(
            _brute_force_w(x, y, p, scale), rel=1e-9
        )
    # Unequal sizes (lcm replication) in 1-D against scipy's closed form for W1.
    a, b = rng.normal(size=4), rng.normal(size=6)
    assert wasserstein_distance(a, b, p=1) == pytest.approx(scipy.stats.wasserstein_distance(a, b))


def test_wasserstein_distance_bad_input():
    with pytest.raises(ValueError, match="dimensions"):
        wasserstein_distance(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="p must be"):
        wasserstein_distance(np.zeros((2, 2)), np.zeros((2, 2)), p=0.5)
    with pytest.raises(ValueError, match="scale"):
        wasserstein_distance(np.zeros((2, 2)), np.zeros((2, 2)), scale=[1.0, 0.0])


# ---------------------------------------------------------------------------------------------
# Wasserstein ball
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("allocation, budget", [("dirichlet", "uniform"), ("equal", "boundary")])
def test_ball_samples_lie_within_eps_of_nominal(spec, p, allocation, budget):
    eps = 0.3
    sampler = make_sampler("wasserstein", spec, eps=eps, p=p, allocation=allocation, budget=budget)
    centroid = spec.nominal[None]
    for seed in range(20):
        x = sampler(jax.random.PRNGKey(seed), 16)
        w = wasserstein_distance(spec.to_vector(x), centroid, p, spec)
        assert w <= eps * (1 + 1e-5), (seed, w)
        if budget == "boundary" and allocation == "equal":
            # Every particle on the sphere and no clipping active here: W = eps exactly.
            assert w == pytest.approx(eps, rel=1e-4)


@pytest.mark.parametrize("p", [1, 2])
def test_ball_around_atoms_and_with_clipping(spec, p):
    rng = np.random.default_rng(1)
    atoms = spec.nominal * rng.uniform(0.8, 1.2, size=(4, spec.dim))
    # Tight bounds on the first parameter make clipping bite; the guarantee must survive it.
    name = spec.names[0]
    lo, hi = 0.95 * atoms[:, 0].min(), 1.05 * atoms[:, 0].max()
    tight = param_spec(envs.make("cartpole"), spec.names, bounds={name: (lo, hi)})
    eps = 0.5
    sampler = make_sampler("wasserstein", tight, eps=eps, p=p, atoms=atoms)
    clipped = 0
    for seed in range(10):
        x = sampler(jax.random.PRNGKey(seed), 12)
        v = np.asarray(tight.to_vector(x))
        assert np.all(v[:, 0] >= lo - 1e-6) and np.all(v[:, 0] <= hi + 1e-6)
        clipped += int(np.sum(np.isclose(v[:, 0], lo) | np.isclose(v[:, 0], hi)))
        assert wasserstein_distance(v, atoms, p, tight) <= eps * (1 + 1e-5)
    assert clipped > 0


@pytest.mark.parametrize("p", [1, 2])
def test_ball_assigns_exactly_n_over_m_particles_per_atom(spec, p):
    """Atoms 10 metric units apart, ε = 0.05: each particle's nearest atom is its owner, every
    atom owns exactly n/m particles, and W_p ≤ ε. Kills: owners drawn at random instead of a
    balanced permutation (unequal counts put W_p far outside the ball)."""
    m, n, eps = 4, 12, 0.05
    atoms = spec.nominal + 10.0 * spec.scale * np.arange(m)[:, None]
    wide = param_spec(
        envs.make("cartpole"),
        spec.names,
        bounds={k: (lo, hi + 40.0 * s) for k, lo, hi, s in zip(
            spec.names, spec.lower, spec.upper, spec.scale, strict=True)},
    )  # fmt: skip
    sampler = make_sampler("wasserstein", wide, eps=eps, p=p, atoms=atoms, budget="boundary")
    for seed in range(10):
        v = np.asarray(wide.to_vector(sampler(jax.random.PRNGKey(seed), n)))
        d = np.linalg.norm((v[:, None] - atoms[None]) / wide.scale, axis=-1)  # (n, m)
        np.testing.assert_array_equal(np.bincount(d.argmin(1), minlength=m), [n // m] * m)
        assert wasserstein_distance(v, atoms, p, wide) <= eps * (1 + 1e-5)


def test_ball_covers_the_ball_not_only_its_centre(spec):
    eps, n = 0.3, 16
    sampler = make_sampler("wasserstein", spec, eps=eps, p=2)
    ws, particle_dists, signs = [], [], []
    for seed in range(200):
        v = np.asarray(spec.to_vector(sampler(jax.random.PRNGKey(seed), n)))
        ws.append(wasserstein_distance(v, spec.nominal[None], 2, spec))
        z = (v - spec.nominal) / spec.scale
        particle_dists.append(np.linalg.norm(z, axis=-1))
        signs.append(np.sign(z))
    ws = np.asarray(ws) / eps
    # W/eps = sqrt(t) with t ~ U(0, 1): from near the centre to the boundary, spread evenly.
    assert ws.min() < 0.15 and ws.max() > 0.97
    assert scipy.stats.kstest(ws**2, "uniform").pvalue > 1e-3
    # Single particles go well beyond eps (mass-weighted budget), in every direction.
    d = np.concatenate(particle_dists)
    assert d.max() > 2 * eps and (d < 0.1 * eps).any()
    s = np.concatenate(signs)
    assert np.all((s > 0).mean(0) > 0.35) and np.all((s < 0).mean(0) > 0.35)


def test_ball_is_reproducible_and_eps_zero_is_the_centroid(spec):
    sampler = make_sampler("wasserstein", spec, eps=0.2)
    a = sampler(jax.random.PRNGKey(3), 8)
    b = sampler(jax.random.PRNGKey(3), 8)
    c = sampler(jax.random.PRNGKey(4), 8)
    for k in spec.names:
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.allclose(a[k], c[k]) for k in spec.names)
    zero = make_sampler("wasserstein", spec, eps=0.0)(jax.random.PRNGKey(0), 4)
    np.testing.assert_allclose(spec.to_vector(zero), np.tile(spec.nominal, (4, 1)), rtol=1e-6)


def test_ball_bad_input(spec):
    with pytest.raises(ValueError, match="eps"):
        make_sampler("wasserstein", spec, eps=-0.1)
    with pytest.raises(ValueError, match="p must be 1 or 2"):
        make_sampler("wasserstein", spec, eps=0.1, p=3)
    with pytest.raises(ValueError, match="atoms must have shape"):
        make_sampler("wasserstein", spec, eps=0.1, atoms=np.ones((3, spec.dim + 1)))
    sampler = make_sampler("wasserstein", spec, eps=0.1, atoms=np.tile(spec.nominal, (3, 1)))
    with pytest.raises(ValueError, match="multiple"):
        sampler(jax.random.PRNGKey(0), 4)
    with pytest.raises(ValueError, match="n must be"):
        sampler(jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="registered"):
        make_sampler("gaussian", spec)
    with pytest.raises(ValueError, match="ParamSpec"):
        make_sampler("box", {"gravity": 9.81})


# ---------------------------------------------------------------------------------------------
# Box, nominal, OMPO
# ---------------------------------------------------------------------------------------------


def test_box_is_uniform_inside_its_bounds(spec):
    x = make_sampler("box", spec, width=0.2)(jax.random.PRNGKey(0), 4000)
    v = np.asarray(spec.to_vector(x))
    lo, hi = spec.nominal - 0.2 * spec.scale, spec.nominal + 0.2 * spec.scale
    assert np.all(v >= lo - 1e-6) and np.all(v <= hi + 1e-6)
    u = (v - lo) / (hi - lo)
    for j in range(spec.dim):
        assert scipy.stats.kstest(u[:, j], "uniform").pvalue > 1e-3
    g = make_sampler("box", spec, low={"gravity": 5.0}, high={"gravity": 6.0})(
        jax.random.PRNGKey(1), 100
    )["gravity"]
    assert 5.0 <= float(g.min()) and float(g.max()) <= 6.0
    with pytest.raises(ValueError, match="low > high"):
        make_sampler("box", spec, low={"gravity": 7.0}, high={"gravity": 6.0})
    with pytest.raises(ValueError, match="not a parameter"):
        make_sampler("box", spec, low={"wind": 7.0})


def test_nominal_sampler(spec):
    x = make_sampler("nominal", spec)(jax.random.PRNGKey(0), 3)
    np.testing.assert_allclose(spec.to_vector(x), np.tile(spec.nominal, (3, 1)), rtol=1e-6)


@pytest.mark.parametrize("amplitude, b", [("paper", 0.2), ("code", 0.1), (0.05, 0.05)])
def test_ompo_hopper_schedule_exactly_as_printed(hopper_spec, amplitude, b):
    sampler = make_sampler("ompo", hopper_spec, task="hopper", hopper_amplitude=amplitude)
    i = jnp.arange(40)
    x = sampler(jax.random.PRNGKey(0), 40, episode=i)
    np.testing.assert_allclose(x["torso_length"], 0.4 + b * np.sin(0.2 * np.arange(40)), atol=1e-6)
    np.testing.assert_allclose(x["foot_length"], 0.39 + b * np.sin(0.2 * np.arange(40)), atol=1e-6)
    with pytest.raises(ValueError, match="episode"):
        sampler(jax.random.PRNGKey(0), 4)


def test_ompo_schedules_table():
    # ADARL.md §3.1, as printed in the AdaRL paper.
    assert OMPO_SCHEDULES["walker2d"] == {
        "torso_length": (0.2, 0.1, 0.3),
        "foot_length": (0.1, 0.05, 0.3),
    }
    assert OMPO_SCHEDULES["ant"] == {"gravity": (14.715, 4.905, 0.5), "wind": (1.0, 0.2, 0.5)}
    assert OMPO_SCHEDULES["humanoid"]["wind"] == (1.0, 0.5, 0.5)
    ant = envs.make("ant")
    sampler = make_sampler("ompo", param_spec(ant), task=ant.ompo_task)
    x = sampler(jax.random.PRNGKey(0), 3, episode=jnp.asarray([0, 1, 2]))
    np.testing.assert_allclose(x["gravity"], 14.715 + 4.905 * np.sin(0.5 * np.arange(3)), rtol=1e-6)
    np.testing.assert_allclose(x["wind"], 1.0 + 0.2 * np.sin(0.5 * np.arange(3)), rtol=1e-6)
    np.testing.assert_allclose(x["mass:torso"], ant.mj_model.body("torso").mass[0], rtol=1e-6)


def test_ompo_bad_input(hopper_spec, spec):
    with pytest.raises(ValueError, match="unknown OMPO task"):
        make_sampler("ompo", hopper_spec, task="cheetah")
    with pytest.raises(ValueError, match="hopper_amplitude"):
        make_sampler("ompo", hopper_spec, task="hopper", hopper_amplitude="big")
    with pytest.raises(ValueError, match="not in the spec"):
        make_sampler("ompo", spec, task="hopper")
    custom = make_sampler("ompo", spec, schedule={"gravity": (9.81, 1.0, 0.1)})
    g = custom(jax.random.PRNGKey(0), 2, episode=jnp.asarray([0, 5]))["gravity"]
    np.testing.assert_allclose(g, [9.81, 9.81 + np.sin(0.5)], rtol=1e-6)
