"""Robustness evaluation: rollouts and grids on a toy batched env, statistics, the table."""

import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adarl import acting, arm_plots, loaders, robust_eval
from adarl.params import ParamSpec
from harness import stats

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
    assert stats.iqm([100, 1, 2, 3, 4, 5, 6, -50]) == pytest.approx(3.5)
    # n = 5 drops one at each end: mean(2, 3, 4) = 3.
    assert stats.iqm([1, 2, 3, 4, 100]) == pytest.approx(3.0)


def test_bootstrap_ci_brackets_and_is_deterministic():
    x = np.random.default_rng(0).normal(10.0, 1.0, size=20)
    lo, hi = stats.bootstrap_ci(x, seed=3)
    assert lo < stats.iqm(x) < hi
    assert (lo, hi) == stats.bootstrap_ci(x, seed=3)
    lo1, hi1 = stats.bootstrap_ci(np.full(5, 2.0))
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


def test_grid_cvar_is_the_mean_of_the_worst_cells():
    grid = np.arange(25.0).reshape(5, 5)  # 25 cells, alpha 0.1 → the worst ceil(2.5) = 3
    assert robust_eval.grid_cvar(grid) == pytest.approx(1.0)  # mean(0, 1, 2)
    assert robust_eval.grid_cvar(grid, alpha=0.2) == pytest.approx(2.0)  # mean(0..4)
    assert robust_eval.grid_cvar([[7.0]]) == 7.0


def _training_run(d, grids, ranks, wall):
    """A SAC/AdaRL run directory as the trainer leaves it: robustness.json + summary.json."""
    d.mkdir()
    g = np.asarray(grids, np.float64)
    (d / "robustness.json").write_text(json.dumps({
        "nominal": g[:, 2, 2].tolist(), "grid": g.tolist(), "grid_mean": g.mean((1, 2)).tolist(),
        "final_ranks": {"rank/actor_0": ranks}, "params": ["a", "b"],
        "values": [[1, 2, 3, 4, 5]] * 2, "scales": [0.25, 0.5, 1, 2, 4],
    }))  # fmt: skip
    (d / "summary.json").write_text(json.dumps({"wall_time_s": wall}))
    (d / "windtunnel.json").write_text(json.dumps({"worst_return": g.min((1, 2)).tolist()}))
    return str(d)


def test_compare_reads_the_trainers_grid_cvar_rank_and_wall_time(tmp_path):
    rng = np.random.default_rng(0)
    grids = rng.uniform(0, 100, size=(3, 5, 5))
    run = _training_run(tmp_path / "adarl", grids, [3, 4, 5], 123.0)
    assert robust_eval.missing({"adarl": [run]}) == []
    rows, table = robust_eval.compare({"adarl": [run]}, reps=100)
    r = rows["adarl"]
    assert r["nominal"]["mean"] == pytest.approx(grids[:, 2, 2].mean())
    assert r["grid_mean"]["mean"] == pytest.approx(grids.mean())
    cvar = [np.sort(g.ravel())[:3].mean() for g in grids]
    assert r["grid_cvar10"]["n"] == 3 and r["grid_cvar10"]["mean"] == pytest.approx(np.mean(cvar))
    assert r["actor_rank"]["mean"] == pytest.approx(4.0)
    assert r["wall_s"]["n"] == 1 and "| 123.0 |" in table  # one value per run: no spread
    # The wind tunnel's own grid, when present, wins over the trainer's.
    (tmp_path / "adarl" / "robust_eval.json").write_text(json.dumps({
        "nominal_return": [1.0, 1.0, 1.0], "grid_mean": [2.0, 2.0, 2.0],
        "per_seed": [{"returns": [[5.0, 6.0], [7.0, 8.0]]}] * 3,
    }))  # fmt: skip
    rows, _ = robust_eval.compare({"adarl": [run]}, reps=100)
    assert rows["adarl"]["nominal"]["mean"] == 1.0 and rows["adarl"]["grid_cvar10"]["mean"] == 5.0


def test_arm_plots_mark_truncations_and_write_figures(tmp_path):
    runs = {}
    for name, truncs in (("adarl", [0, 0, 1, 1, 2]), ("sac", [0] * 5)):
        d = tmp_path / name
        _training_run(d, np.full((2, 5, 5), 50.0), [3, 3], 1.0)
        with open(d / "metrics.jsonl", "w") as f:
            for i, n in enumerate(truncs):
                row = {
                    "step": i + 1,
                    "train/grad_steps": 1000.0 * (i + 1),
                    "train/truncations": float(n),
                    "rank/actor_0": 64.0 / (1 + n),
                }
                if i % 2:
                    row |= {"eval/return": 10.0 * i, "eval/return/std": 1.0}
                f.write(json.dumps(row) + "\n")  # fmt: skip
        runs[name] = [str(d)]
    records = [json.loads(x) for x in open(tmp_path / "adarl" / "metrics.jsonl")]
    assert arm_plots.truncation_steps(records) == [3000.0, 5000.0]
    assert (
        arm_plots.truncation_steps(
            [json.loads(x) for x in open(tmp_path / "sac" / "metrics.jsonl")]
        )
        == []
    )
    for fn, png in ((arm_plots.plot_return_curves, "r.png"), (arm_plots.plot_rank_curves, "k.png"),
                    (arm_plots.plot_heatmaps, "h.png")):  # fmt: skip
        path = fn(runs, str(tmp_path / png))
        assert os.path.getsize(path) > 1000


def test_unknown_algo_has_no_loader(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"algo": "dqn"}))
    with pytest.raises(ValueError, match="registered"):
        loaders.load_run(str(tmp_path))
