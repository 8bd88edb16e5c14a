"""Wind tunnel on pure-JAX toy systems whose return is a known function of the parameters."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adarl import windtunnel as wt

# ---------------------------------------------------------------------------------------------
# Toy systems
# ---------------------------------------------------------------------------------------------

HORIZON = 20
GAIN = 0.5  # fixed linear policy u = -GAIN·x


def linear_return(theta, keys):
    """x' = a·x + b·u with u = -GAIN·x, x0 = 1 + 0.1·N(0,1) from the key; return -Σ x_t².

    Return = -x0²·Σ_{t=1..T} c^{2t} with c = a − GAIN·b: strictly decreasing in |c|.
    """
    a, b = theta[:, 0], theta[:, 1]
    x0 = 1.0 + 0.1 * jax.vmap(lambda k: jax.random.normal(k))(keys)

    def step(x, _):
        x = a * x + b * (-GAIN * x)
        return x, x**2

    _, sq = jax.lax.scan(step, x0, None, length=HORIZON)
    return -sq.sum(0)


# Box around (a, b) = (0.9, 0.5), scale (0.1, 0.2): a ∈ [0.8, 1.0], b ∈ [0.3, 0.7] at ε = 1.
SPACE = wt.Space(
    ("a", "b"),
    np.array([0.9, 0.5]),
    np.array([0.1, 0.2]),
    np.array([-10.0, -10.0]),
    np.array([10.0, 10.0]),
)


def quadratic_return(theta, keys):
    """R(θ) = 5 − (θ−c)ᵀ H (θ−c), H = diag(3, 1) in scaled units: the worst case on the l2 ball
    of radius ε is 5 − 3ε² at θ = c ± ε·e₁ (the top eigenvector)."""
    del keys
    z = (theta - jnp.asarray(SPACE.center, jnp.float32)) / jnp.asarray(SPACE.scale, jnp.float32)
    return 5.0 - (3.0 * z[:, 0] ** 2 + z[:, 1] ** 2)


def grid_minimum(return_fn, lo, hi, n=201):
    a, b = np.meshgrid(np.linspace(lo[0], hi[0], n), np.linspace(lo[1], hi[1], n), indexing="ij")
    theta = jnp.asarray(np.stack([a.ravel(), b.ravel()], -1), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    # Same evaluation keys as the wind tunnel (eval_seed=0, episodes=4): mean over them.
    r = jnp.stack([return_fn(theta, jnp.broadcast_to(k, (theta.shape[0], 2))) for k in keys])
    return float(r.mean(0).min())


@pytest.fixture(scope="module")
def box_results():
    ball = wt.make_ball("box", SPACE, 1.0)
    res = wt.search(
        linear_return,
        ball,
        jax.random.PRNGKey(0),
        searchers=("random", "cmaes", "grad"),
        episodes=4,
        searcher_kwargs={
            "random": {"num_samples": 128, "batch": 64},
            "cmaes": {"popsize": 12, "generations": 25},
            "grad": {"restarts": 3, "steps": 25},
        },
    )
    return ball, res


def _best_of(res, name):
    sel = np.asarray(res.trace.searcher) == res.searchers.index(name)
    return float(np.min(np.asarray(res.trace.returns)[sel]))


@pytest.mark.parametrize("searcher", ["cmaes", "grad"])
def test_finds_known_worst_case_on_linear_system(box_results, searcher):
    _, res = box_results
    truth = grid_minimum(linear_return, (0.8, 0.3), (1.0, 0.7))
    # The worst case is the corner a = 1.0, b = 0.3 (largest closed-loop pole c = 0.85).
    found = _best_of(res, searcher)
    assert found >= truth - 1e-4  # cannot beat the exact minimum over the box
    assert abs(found - truth) <= 0.01 * abs(truth), (found, truth)
    np.testing.assert_allclose(res.worst_params[0], [1.0, 0.3], atol=0.02)


def test_worst_case_not_above_nominal_and_cvar_between(box_results):
    _, res = box_results
    assert res.worst_return <= res.nominal_return
    assert res.worst_return <= res.cvar <= res.nominal_return + 1e-6


def test_quadratic_worst_case_on_l2_ball_is_analytic():
    eps = 0.7
    ball = wt.make_ball("l2", SPACE, eps)
    res = wt.search(
        quadratic_return,
        ball,
        jax.random.PRNGKey(1),
        searchers=("grad",),
        episodes=1,
        searcher_kwargs={"grad": {"restarts": 2, "steps": 40, "lr": 0.1}},
    )
    np.testing.assert_allclose(res.worst_return, 5.0 - 3.0 * eps**2, rtol=1e-3)
    np.testing.assert_allclose(res.worst_distance, eps, rtol=1e-4)


def test_worst_case_non_increasing_in_radius():
    radii = [0.1, 0.25, 0.5, 0.75, 1.0]
    results = wt.sweep(
        linear_return,
        lambda r: wt.make_ball("l2", SPACE, r),
        radii,
        jax.random.PRNGKey(2),
        searchers=("random",),
        episodes=2,
        searcher_kwargs={"random": {"num_samples": 32, "batch": 32}},
    )
    worst = [r.worst_return for r in results]
    assert all(b <= a for a, b in zip(worst, worst[1:], strict=False)), worst
    assert worst[-1] < worst[0]  # the search actually moves with the radius


def test_reproducible_under_a_seed(box_results):
    ball, res = box_results
    again = wt.search(
        linear_return,
        ball,
        jax.random.PRNGKey(0),
        searchers=("random", "cmaes", "grad"),
        episodes=4,
        searcher_kwargs={
            "random": {"num_samples": 128, "batch": 64},
            "cmaes": {"popsize": 12, "generations": 25},
            "grad": {"restarts": 3, "steps": 25},
        },
    )
    np.testing.assert_array_equal(again.worst_x, res.worst_x)
    assert again.worst_return == res.worst_return


# ---------------------------------------------------------------------------------------------
# Balls, reports and the sampler
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["box", "l2", "wasserstein"])
def test_projection_feasible_and_idempotent(name):
    atoms = np.array([[0.9, 0.5], [0.85, 0.55], [0.95, 0.45]]) if name == "wasserstein" else None
    ball = wt.make_ball(name, SPACE, 0.3, atoms)
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (50, ball.dim))
    p = jax.vmap(ball.project)(x)
    d = jax.vmap(ball.distance)(p)
    assert float(d.max()) <= 0.3 * (1 + 1e-6)
    np.testing.assert_allclose(jax.vmap(ball.project)(p), p, rtol=1e-6)  # inside: unchanged
    s = ball.sample(jax.random.PRNGKey(1), 100)
    assert float(jax.vmap(ball.distance)(s).max()) <= 0.3 * (1 + 1e-6)


def test_wasserstein_particle_ball_is_within_w2_radius():
    from adarl.dynamics import wasserstein_distance

    atoms = np.array([[0.9, 0.5], [0.8, 0.6], [1.0, 0.4], [0.95, 0.5]])
    ball = wt.make_ball("wasserstein", SPACE, 0.4, atoms)
    x = ball.project(10.0 * jax.random.normal(jax.random.PRNGKey(3), (ball.dim,)))
    theta = np.asarray(ball.to_params(x))
    w2 = wasserstein_distance(theta, atoms, p=2, scale=SPACE.scale)
    assert w2 <= 0.4 * (1 + 1e-5)
    # One atom: the W2 ball is the l2 ball.
    one = wt.make_ball("wasserstein", SPACE, 0.4)
    l2 = wt.make_ball("l2", SPACE, 0.4)
    np.testing.assert_allclose(one.project(x[:2] * 0 + 5.0), l2.project(jnp.full(2, 5.0)))


def test_failure_cases_and_json(box_results, tmp_path):
    ball, res = box_results
    thr = 0.9 * res.nominal_return - 0.1 * abs(res.nominal_return) - 0.5
    cases = wt.failure_cases(res, ball, SPACE.names, threshold=thr, eval_seed=0, max_cases=5)
    assert 0 < len(cases) <= 5
    assert all(c["return"] < thr for c in cases)
    assert cases[0]["return"] == pytest.approx(res.worst_return)
    # Reproduce the first case from its parameters and seed.
    theta = jnp.asarray([[cases[0]["params"][0]["a"], cases[0]["params"][0]["b"]]] * 4)
    keys = jax.random.split(jax.random.PRNGKey(cases[0]["eval_seed"]), 4)
    np.testing.assert_allclose(linear_return(theta, keys).mean(), cases[0]["return"], rtol=1e-5)
    out = wt.result_to_json(res, SPACE.names)
    assert out["worst_return"] == res.worst_return
    assert wt.plot([res], str(tmp_path / "wt.png")).endswith("wt.png")


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="registered"):
        wt.make_ball("ellipse", SPACE, 1.0)
    with pytest.raises(ValueError, match="cmaes"):
        wt.check_searchers(["annealing"])


def test_failure_sampler_mixes_points_and_base():
    from adarl.dynamics import make_sampler
    from adarl.params import ParamSpec

    spec = ParamSpec(("a", "b"), SPACE.center, SPACE.scale, SPACE.lower, SPACE.upper)
    pts = np.array([[1.0, 0.3], [0.8, 0.7]])
    s = make_sampler("windtunnel", spec, points=pts, p_adv=0.25)
    out = jax.jit(lambda k: s(k, 4000))(jax.random.PRNGKey(0))
    x = np.stack([np.asarray(out["a"]), np.asarray(out["b"])], -1)
    is_pt = (np.abs(x[:, None] - pts[None]).max(-1) < 1e-6).any(-1)
    is_nom = np.abs(x - SPACE.center).max(-1) < 1e-6
    assert np.all(is_pt | is_nom)
    assert abs(is_pt.mean() - 0.25) < 0.03


@pytest.mark.slow
def test_windtunnel_experiment_on_a_smoke_run(tmp_path):
    """MJX pendulum: train the RNAC smoke preset, then grid + search every seed (minutes)."""
    import json
    import os

    from adarl import rnac
    from experiments.configs import rnac as rnac_cfgs
    from experiments.configs import windtunnel as wt_cfgs

    workdir = str(tmp_path / "run")
    rnac.train_and_evaluate(rnac_cfgs.get_config("smoke_ppo"), workdir)
    out = wt.evaluate_run(workdir, wt_cfgs.get_config("smoke"))
    assert len(out["worst_return"]) == 2  # the smoke preset vmaps two seeds
    for e in out["per_seed"]:
        assert e["worst_return"] <= e["nominal_return"]
    with open(os.path.join(workdir, "robust_eval.json")) as f:
        grid = json.load(f)
    assert len(grid["per_seed"]) == 2 and np.isfinite(grid["grid_mean"]).all()
    assert os.path.exists(os.path.join(workdir, "robust_eval.png"))
    assert os.path.exists(os.path.join(workdir, "windtunnel_seed0.png"))
