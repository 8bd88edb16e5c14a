"""Robustness evaluation: rollouts and grids on a toy batched env, statistics, the table."""

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adarl import acting, loaders, robust_eval
from adarl.params import ParamSpec

LENGTH = 5  # toy episode length (steps)


class _State(NamedTuple):
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    info: dict


class ToyEnv:
    """Reward per step ``g + h·a`` (a the action), episodes of LENGTH steps, auto-reset; obs = t.

    With the policy a = 1 the first episode's return is exactly LENGTH·(g + h).
    """

    observation_size = 1
    action_size = 1

    def reset_with_params(self, keys, params):
        n = keys.shape[0]
        info = {"params": params, "t": jnp.zeros((n,))}
        return _State(jnp.zeros((n, 1)), jnp.zeros((n,)), jnp.zeros((n,)), info)

    def step(self, state, actions):
        p, t = state.info["params"], state.info["t"] + 1
        reward = p["g"] + p["h"] * actions[:, 0]
        done = (t >= LENGTH).astype(jnp.float32)
        t = jnp.where(done > 0, 0.0, t)
        return _State(t[:, None], reward, done, {"params": p, "t": t})


SPEC = ParamSpec(
    ("g", "h"),
    np.array([1.0, 2.0]),
    np.array([1.0, 2.0]),
    np.array([0.0, 0.0]),
    np.array([10.0, 10.0]),
)


def policy_apply(w, obs):
    return jnp.tanh(w * jnp.ones((obs.shape[0], 1)))


def test_episode_returns_stop_at_the_first_done():
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {"g": jnp.array([1.0, 2.0, 0.0]), "h": jnp.array([0.0, 1.0, 3.0])}
    # 3·LENGTH steps simulated, but only the first episode (LENGTH steps) counts.
    ret = acting.episode_returns(ToyEnv(), lambda o: jnp.ones((3, 1)), keys, params, 3 * LENGTH)
    np.testing.assert_allclose(ret, LENGTH * np.array([1.0, 3.0, 3.0]))


def test_grid_matches_analytic_returns_per_seed():
    # Two "seeds" with different policy weights: a = tanh(w).
    w = jnp.array([10.0, 0.0])  # a ≈ 1 and a = 0
    rel = (0.5, 1.0, 2.0)
    grids = robust_eval.evaluate_grid(
        ToyEnv(), SPEC, policy_apply, w, ("g", "h"), rel, jax.random.PRNGKey(0), 2, LENGTH
    )
    g = SPEC.nominal[0] * np.array(rel)
    h = SPEC.nominal[1] * np.array(rel)
    a0 = np.tanh(10.0)
    want0 = LENGTH * (g[:, None] + h[None, :] * a0)
    np.testing.assert_allclose(grids[0].returns, want0, rtol=1e-5)
    np.testing.assert_allclose(grids[1].returns, LENGTH * np.broadcast_to(g[:, None], (3, 3)))
    np.testing.assert_allclose(grids[0].nominal, LENGTH * (1.0 + 2.0 * a0), rtol=1e-5)
    out = robust_eval.grid_to_json(grids[0])
    assert out["grid_mean"] == pytest.approx(want0.mean(), rel=1e-5)


def test_grid_rejects_unknown_parameter():
    with pytest.raises(ValueError, match="not in the task"):
        robust_eval.grid_points(SPEC, ("g", "mass"), (1.0,))


def test_heatmap_written(tmp_path):
    grids = robust_eval.evaluate_grid(
        ToyEnv(), SPEC, policy_apply, jnp.array([1.0]), ("g", "h"), (0.5, 1.0),
        jax.random.PRNGKey(0), 1, LENGTH,
    )  # fmt: skip
    path = robust_eval.plot_heatmap(grids[0], str(tmp_path / "h.png"))
    assert os.path.getsize(path) > 1000


# ---------------------------------------------------------------------------------------------
# Statistics and the comparison table
# ---------------------------------------------------------------------------------------------


def test_iqm_by_hand():
    # n = 8: sorted (-50, 1, 2, 3, 4, 5, 6, 100); trim_mean(0.25) drops 2 at each end
    # → mean(2, 3, 4, 5) = 3.5.
    assert robust_eval.iqm([100, 1, 2, 3, 4, 5, 6, -50]) == pytest.approx(3.5)
    # n = 5 drops one at each end: mean(2, 3, 4) = 3.
    assert robust_eval.iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)


def test_bootstrap_ci_brackets_and_is_deterministic():
    x = np.random.default_rng(0).normal(10.0, 1.0, size=20)
    lo, hi = robust_eval.bootstrap_ci(x, seed=3)
    assert lo < robust_eval.iqm(x) < hi
    assert (lo, hi) == robust_eval.bootstrap_ci(x, seed=3)
    lo1, hi1 = robust_eval.bootstrap_ci(np.full(5, 2.0))
    assert lo1 == hi1 == 2.0


def test_compare_collects_runs_and_seeds(tmp_path):
    runs = {}
    for algo, offset in (("sac", 0.0), ("rnac_ds", 10.0)):
        dirs = []
        for r in range(2):  # two processes, each with vmapped seeds (lists) or one (scalar)
            d = tmp_path / f"{algo}_{r}"
            d.mkdir()
            nominal = [offset + 1 + r, offset + 3 + r] if r == 0 else offset + 5
            grid = [offset + 0.5, offset + 1.5] if r == 0 else offset + 2.5
            (d / "robust_eval.json").write_text(
                json.dumps({"nominal_return": nominal, "grid_mean": grid})
            )
            (d / "windtunnel.json").write_text(json.dumps({"worst_return": grid}))
            dirs.append(str(d))
        runs[algo] = dirs
    rows, table = robust_eval.compare(runs, reps=200)
    s = rows["sac"]["nominal"]
    # sac nominal per seed: [1, 3, 5] → IQM of 3 values drops none (int(0.75) = 0): mean 3.
    assert s["n"] == 3 and s["iqm"] == pytest.approx(3.0) and s["std"] == pytest.approx(2.0)
    assert rows["rnac_ds"]["grid_mean"]["mean"] == pytest.approx(11.5)
    assert "| sac | 3 |" in table and "rnac_ds" in table


def test_unknown_algo_has_no_loader(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"algo": "dqn"}))
    with pytest.raises(ValueError, match="registered"):
        loaders.load_run(str(tmp_path))
