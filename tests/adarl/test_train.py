"""The SAC/AdaRL trainer: probe-env learning, rank adaptation, resets, seeds, harness runs."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from adarl import train as train_lib
from tests.adarl.test_sac import probe_config, probe_envs


@pytest.fixture(scope="module")
def probe():
    """One compiled AdaRL trainer on the probe env (truncations at the first 4 updates)."""
    config = probe_config()
    fns = train_lib.make_train_fns(config, probe_envs())
    return config, fns, jax.jit(fns.init), jax.jit(fns.update)


@pytest.fixture(scope="module")
def trained(probe):
    config, fns, init, update = probe
    state = init(jax.random.PRNGKey(0))
    ranks = [np.asarray(state.agent.actor_rank).tolist()]
    for _ in range(config.train.num_updates):
        state, metrics = update(state)
        ranks.append(np.asarray(state.agent.actor_rank).tolist())
    return state, metrics, ranks


def test_sac_learns_probe_q_value(probe, trained):
    """Reward 1, every step terminal: Q(s, a) = 1 for every s, a (rejax's probe test)."""
    _, fns, _, _ = probe
    state, metrics, _ = trained
    agent = state.agent
    obs = jax.random.normal(jax.random.PRNGKey(1), (64, 2))
    act = jax.random.uniform(jax.random.PRNGKey(2), (64, 1), minval=-1, maxval=1)
    q = fns.nets.critic.apply(agent.critic_params, obs, act, agent.critic_rank)
    np.testing.assert_allclose(np.asarray(q), 1.0, atol=0.1)
    assert float(metrics["train/return"]) == 1.0


def test_rank_changes_do_not_recompile(probe, trained):
    config, _, _, update = probe
    state, _, ranks = trained
    assert int(state.agent.num_truncations) == config.lowrank.max_truncations
    assert len({tuple(r) for r in ranks}) > 1  # ranks did change ...
    assert all(b[0] <= a[0] for a, b in zip(ranks, ranks[1:], strict=False))  # never grew
    assert update._cache_size() == 1  # ... without a second compilation


def test_truncation_resets_optimizer_and_restarts_lr(probe, trained):
    config, fns, _, _ = probe
    agent = trained[0].agent
    new = jax.jit(fns.truncate)(agent)
    # Ranks: Eq. 14 drops at least one, and the projected kernel has exactly that rank.
    assert np.all(np.asarray(new.actor_rank) < np.asarray(agent.actor_rank))
    assert np.all(np.asarray(new.critic_rank) < np.asarray(agent.critic_rank))
    layer = new.actor_params["params"]["mlp"]["hidden_1"]
    k = np.asarray(layer["A"] @ layer["B"])
    assert np.linalg.matrix_rank(k, tol=1e-5 * np.abs(k).max()) == int(new.actor_rank[0])
    # Adam states are fresh (count 0, zero moments); they were not before.
    for before, after in (
        (agent.actor_opt_state, new.actor_opt_state),
        (agent.critic_opt_state, new.critic_opt_state),
    ):
        assert int(before.count) > 0 and int(after.count) == 0
        assert all(float(jnp.abs(x).max()) == 0 for x in jax.tree.leaves((after.mu, after.nu)))
    # Targets re-copied from the projected critics (ADARL.md §6).
    for t, c in zip(
        jax.tree.leaves(new.target_critic_params), jax.tree.leaves(new.critic_params), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(t), np.asarray(c))
    # The learning rate restarts its warm-up at the truncation step.
    step = int(new.grad_steps)
    assert int(new.last_reset) == step
    lr_now = float(fns.lr(step, new.last_reset))
    lr_cont = float(fns.lr(step, agent.last_reset))
    assert lr_now == pytest.approx(lr_cont / config.sac.warmup_steps, rel=1e-4)


def test_make_train_is_pure_and_vmaps_over_seeds():
    config = probe_config(num_updates=2, steps_per_update=5)
    train = train_lib.make_train(config, probe_envs())
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    run = jax.jit(jax.vmap(train))
    state, metrics = run(keys)
    assert metrics["train/return"].shape == (2, 2)
    assert metrics["eval/return"].shape == (2,)
    np.testing.assert_allclose(np.asarray(metrics["eval/return"]), 1.0)
    _, again = run(keys)
    np.testing.assert_array_equal(
        np.asarray(metrics["train/q_mean"]), np.asarray(again["train/q_mean"])
    )
    assert not np.allclose(
        np.asarray(metrics["train/q_mean"][0]), np.asarray(metrics["train/q_mean"][1])
    )


def test_harness_run_and_resume_continue_the_same_run(tmp_path):
    """Two vmapped seeds through the harness; an interrupted run resumed == uninterrupted run
    (with the replay in the checkpoints; without it see test_gpu_presets)."""
    config = probe_config(num_updates=4, checkpoint_every=1, eval_every=2, checkpoint_replay=True)
    config.num_seeds = 2
    fns = train_lib.make_train_fns(config, probe_envs())
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    s_full = train_lib.train_and_evaluate(config, full, fns=fns, progress=False)
    s_int = train_lib.train_and_evaluate(config, part, fns=fns, stop_after=2, progress=False)
    assert s_int["interrupted"] and s_int["step"] == 2
    s_res = train_lib.train_and_evaluate(config, part, fns=fns, progress=False)
    assert s_res["resumed_from"] == 2
    for key in ("train/q_mean", "train/critic_loss", "eval/return", "rank/actor_0"):
        assert s_res["final_metrics"][key] == pytest.approx(s_full["final_metrics"][key], rel=1e-5)
    rows = [json.loads(line) for line in open(os.path.join(part, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert "eval/return/std" in s_full["final_metrics"]  # per-seed metrics: mean and spread
    for name in ("return.png", "rank.png", "summary.json", "spectra.jsonl"):
        assert os.path.exists(os.path.join(full, name)), name
    policy, cfg = train_lib.load_policy(full, seed_index=1, fns=fns)
    act = policy(jnp.zeros((3, 2)))
    assert act.shape == (3, 1) and np.all(np.abs(np.asarray(act)) <= 1)


# Uniform-random policy on the smoke task (CartpoleBalance, 100 decisions of 0.04 s, max return
# 100), 4 nominal episodes per seed, 3 seeds: per-seed means 43.1, 37.9, 48.5; the smoke preset
# trained to 96.8, 99.9, 99.5 (``python -m experiments.smoke_learning --algo adarl --seeds 3``).
RANDOM_POLICY_RETURN_MAX = 48.5


@pytest.mark.slow
def test_smoke_preset_end_to_end_cli(tmp_path):
    """``python -m experiments.adarl`` with the smoke preset on the real MJX task: it learns to
    balance (every seed clears the best random-policy seed mean by 20), grid included."""
    workdir = str(tmp_path / "smoke")
    cmd = [
        sys.executable,
        "-m",
        "experiments.adarl",
        "--config",
        "experiments/configs/adarl.py:smoke",
        "--workdir",
        workdir,
    ]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    subprocess.run(cmd, check=True, cwd=root, capture_output=True)
    summary = json.load(open(os.path.join(workdir, "summary.json")))
    rob = summary["robustness"]
    assert len(rob["nominal"]) == 2 and len(rob["grid_mean"]) == 2
    assert min(rob["nominal"]) > RANDOM_POLICY_RETURN_MAX + 20, rob["nominal"]
    for name in ("robustness.json", "robustness.png", "spectrum.png", "return.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    policy, config = train_lib.load_policy(workdir)
    assert policy(jnp.zeros((1, 5))).shape == (1, 1)


def _polyak_kernel_error(agent, steps: int, tau: float = 0.005) -> float:
    """Relative error of the target critics' factorised kernels after ``steps`` Polyak steps
    towards the (frozen) online critics."""
    from adarl import networks

    target = agent.target_critic_params
    for _ in range(steps):
        target = jax.tree.map(lambda t, p: (1 - tau) * t + tau * p, target, agent.critic_params)
    errs = []
    for c in range(2):
        pick = lambda p: jax.tree.map(lambda x: x[c], p["params"]["mlp"]["hidden_1"])  # noqa: E731
        k_t = networks.effective_kernel(pick(target), agent.critic_rank[c, 0])
        k_c = networks.effective_kernel(pick(agent.critic_params), agent.critic_rank[c, 0])
        errs.append(float(jnp.linalg.norm(k_t - k_c) / jnp.linalg.norm(k_c)))
    return max(errs)


def test_projected_targets_polyak_average_like_with_like(trained):
    """target_mode='project': the targets (online + 2.5% noise) are projected on their own, then
    rotated onto the online factors; 140 Polyak steps towards the online critics must shrink the
    target's kernel error, not blow it up (unaligned SVD factors: 0.025 -> ~0.8, issue 13).
    Kills: the alignment dropped from ``train.truncate``."""
    config = probe_config()
    config.lowrank.target_mode = "project"
    fns = train_lib.make_train_fns(config, probe_envs())
    agent = trained[0].agent
    noise = jax.tree.map(
        lambda x: 0.025 * jnp.std(x) * jax.random.normal(jax.random.PRNGKey(5), x.shape),
        agent.critic_params,
    )
    agent = agent.replace(target_critic_params=jax.tree.map(jnp.add, agent.critic_params, noise))
    new = jax.jit(fns.truncate)(agent)
    before = _polyak_kernel_error(new, 0)
    after = _polyak_kernel_error(new, 140)
    assert 0 < before < 0.2
    assert after < before, (before, after)
