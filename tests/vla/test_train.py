"""Trainer pieces: dynamic-sampling bounds, GRPO advantages on action tokens, config errors, and
the end-to-end entry point on a shrunk smoke config."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from flowrl.sampling import group_keep_mask
from tests.vla.conftest import tiny_config
from vla import train


def test_keep_mask_keeps_groups_with_1_to_7_successes_of_8():
    scores = (np.arange(8)[None, :] < np.arange(9)[:, None]).astype(np.float32)  # 0..8 successes
    keep = np.asarray(group_keep_mask(jnp.asarray(scores), 0.1, 0.9))
    assert keep.tolist() == [False] + [True] * 7 + [False]


def _fake_rounds(monkeypatch, trainer, successes_per_round):
    """Make generation round r return groups with the given success counts (per seed)."""
    real = train._round_rollouts

    def fake(config, setup, state, r):
        ro = real(config, setup, state, 0)
        n = config.rl.group_size
        counts = np.asarray(successes_per_round[min(r, len(successes_per_round) - 1)])
        succ = (np.arange(n)[None, None, :] < counts[:, :, None]).astype(np.float32)
        return ro._replace(success=jnp.asarray(succ.reshape(succ.shape[0], -1)))

    monkeypatch.setattr(train, "_round_rollouts", fake)


def test_dynamic_sampling_refills_and_keeps_only_mixed_groups(monkeypatch, trainer):
    config = tiny_config()
    state = trainer.init(jax.random.PRNGKey(0))
    # Round 0: one all-fail and one mixed group; round 1: an all-success and a mixed group.
    _fake_rounds(monkeypatch, trainer, [[[0, 3]], [[8, 5]]])
    batch, metrics = train.collect_batch(config, trainer.setup, state)
    succ = np.asarray(batch.rollout.success).reshape(1, 2, 8).sum(-1)
    assert succ.tolist() == [[3, 5]]
    assert float(metrics["ds/filled"][0]) == 1.0 and float(metrics["ds/num_batches"][0]) == 2.0
    assert np.all(np.asarray(batch.valid) == 1.0)


def test_dynamic_sampling_is_bounded_and_unfilled_batches_error(monkeypatch, trainer):
    config = tiny_config()
    state = trainer.init(jax.random.PRNGKey(0))
    _fake_rounds(monkeypatch, trainer, [[[0, 8]], [[4, 0]], [[2, 2]]])
    batch, metrics = train.collect_batch(config, trainer.setup, state)
    assert float(metrics["ds/num_batches"][0]) == config.rl.max_gen_batches == 2
    assert float(metrics["ds/filled"][0]) == 0.5
    assert np.asarray(batch.valid).reshape(2, 8)[:, 0].tolist() == [1.0, 0.0]
    # Without dynamic sampling the first groups are kept unfiltered.
    config.rl.dynamic_sampling = False
    batch, metrics = train.collect_batch(config, trainer.setup, state)
    assert np.asarray(batch.rollout.success).reshape(2, 8).sum(-1).tolist() == [0, 8]
    # The trainer's update raises when the batch stays unfilled and on_unfilled="error".
    config = tiny_config()
    config.rl.on_unfilled = "error"
    config.sft.num_updates = 1
    strict = train.make_train(config)
    state = state.replace(step=jnp.ones_like(state.step))  # past SFT
    with pytest.raises(train.DynamicSamplingError, match="filled only 50%"):
        strict.update(state)


def test_advantages_reach_action_tokens_up_to_the_finishing_chunk(trainer):
    config = tiny_config()
    demos = trainer.setup.demos  # 6 episodes; make 2 groups of 3 with mixed outcomes
    success = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    ro = demos._replace(success=success)
    batch = train.RLBatch(ro, jnp.array([0, 0, 0, 1, 1, 1]), jnp.array([1.0, 1, 1, 1, 1, 0]))
    _, _, mask, adv, _ = train.rl_token_inputs(config, batch)
    a = ro.bins.shape[-1]
    expected_mask = np.repeat(np.asarray(demos.chunk_mask), a, axis=1)
    expected_mask[5] = 0.0  # invalid row
    np.testing.assert_array_equal(np.asarray(mask), expected_mask)
    # Group 0: scores (1, 0, 0): z = (2/3, -1/3, -1/3) / std(unbiased) = 0.57735.
    z = np.array([2 / 3, -1 / 3, -1 / 3]) / np.std([1, 0, 0], ddof=1)
    for row, value in enumerate(z):
        live = expected_mask[row] > 0
        np.testing.assert_allclose(np.asarray(adv)[row][live], value, rtol=1e-4)
        assert np.all(np.asarray(adv)[row][~live] == 0.0)
    # Group 1 has one invalid row: (1, 1) -> zero advantage.
    assert np.all(np.asarray(adv)[3:] == 0.0)


def test_rl_loss_config_is_clip_higher_without_kl():
    cfg = train.rl_loss_config(tiny_config())
    assert (cfg.clip_low, cfg.clip_high, cfg.kl_coef, cfg.dual_clip) == (0.2, 0.28, 0.0, None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("env.tasks", ("reach", "stack"), "env.tasks[1]"),
        ("sft.demos", "two", "config.sft.demos='two'"),
        ("rl.num_minibatches", 3, "rl.num_minibatches=3"),
        ("rl.train_groups", 9, "rl.train_groups"),
        ("model.layer", "lstm", "config.model.layer='lstm'"),
        ("rl.loss", "ppo2", "config.rl.loss='ppo2'"),
    ],
)
def test_bad_config_raises_config_error_naming_the_field(field, value, message):
    config = tiny_config()
    section, name = field.split(".")
    config[section][name] = value
    with pytest.raises(harness.ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train.validate_config(config)


def test_entry_point_end_to_end(tmp_path, trainer):
    """The harness run of a shrunk smoke config: SFT learns, RL runs, outputs are written."""
    workdir = str(tmp_path / "run")
    summary = train.train_and_evaluate(tiny_config(), workdir)
    rows = harness.read_metrics(workdir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["sft/nll"] < np.log(256)  # below the uniform policy's NLL
    assert "rl/pg_loss" in rows[-1] and "eval/success_mean" in rows[-1]
    for name in ("analysis.json", "trajectories.png", "rollout.gif", "success.png"):
        assert os.path.exists(os.path.join(workdir, name)), name
    with open(os.path.join(workdir, "analysis.json")) as f:
        report = json.load(f)
    assert report["demo_behaviour"]["push"]["success"] == 1.0
    assert summary["final_metrics"]["eval/success_mean"] == pytest.approx(
        np.mean([report["final_success"][t][0] for t in report["tasks"]])
    )


@pytest.mark.slow
def test_smoke_preset_learns(tmp_path):
    """The full smoke preset: SFT on one demonstration per task solves its demonstrated scenes."""
    from experiments.configs import vla as vla_configs

    summary = train.train_and_evaluate(vla_configs.smoke(), str(tmp_path / "smoke"))
    report = summary["analysis"]
    assert np.mean([np.mean(v) for v in report["sft_success"].values()]) > 0.0
