"""The adaptive SFT start (issue 15: "SFT until maj@8 is well above pass@1"): the stopping
rule, its statistic, the cap, and the SFT log written to start_eval.json."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from flowrl import trainer as TR
from tests.flowrl.test_trainer import tiny_config


def adaptive_config(until_maj, steps=6, every=2):
    c = tiny_config("grpo")
    c.sft.steps = steps
    c.sft.until_maj = until_maj
    c.sft.check_every = every
    c.sft.check_prompts = 4
    c.sft.check_samples = 3
    return c


def test_majority_correct_and_check_statistic_on_training_problems(monkeypatch):
    s = TR.make_setup(adaptive_config(0.5))
    seen = {}

    def fake(s_, lm, key, split, index, num_samples, temperature, top_p):
        seen.update(split=split, index=np.asarray(index), m=num_samples)
        answers = jnp.array([[1, 1, 2], [3, 4, 4], [-1, -1, 5]])
        correct = jnp.array([[True, True, False], [True, False, False], [False, False, False]])
        return TR.EvalSamples(None, correct, answers)

    monkeypatch.setattr(TR, "sample_and_score", fake)
    maj, pass1 = TR.sft_check(s, None, jax.random.PRNGKey(0))
    # Majorities: 1 (correct), 4 (wrong), 5 (wrong: invalid samples do not vote).
    assert float(maj) == pytest.approx(1 / 3) and float(pass1) == pytest.approx(3 / 9)
    n = len(s.task.train)
    assert seen["split"] is s.task.train and seen["m"] == 3
    np.testing.assert_array_equal(seen["index"], np.arange(n - 4, n))  # past the demos


@pytest.mark.parametrize("until, want_steps", [(0.8, 2), (0.9, 2), (0.95, 6)])
def test_stops_at_first_check_reaching_threshold_else_runs_to_cap(monkeypatch, until, want_steps):
    monkeypatch.setattr(TR, "sft_check", lambda s, lm, key: (jnp.float32(0.9), jnp.float32(0.4)))
    lm, log = jax.jit(lambda k: TR.run_sft(TR.make_setup(adaptive_config(until)), k))(
        jax.random.PRNGKey(0)
    )
    assert int(log.steps) == want_steps
    losses = np.asarray(log.losses)
    assert np.isfinite(losses[:want_steps]).all() and np.isnan(losses[want_steps:]).all()
    assert float(log.check_maj) == pytest.approx(0.9) and float(log.check_pass1) == pytest.approx(
        0.4
    )


def test_real_check_runs_inside_the_loop_and_sft_start_logs_it():
    trainer = TR.build(adaptive_config(1.0, steps=4, every=2))  # an untrained model: never stops
    lm, info = TR.sft_start(trainer, jax.random.PRNGKey(1))
    assert info["sft_steps"] == 4.0 and 0.0 <= info["sft_check_maj"] <= 1.0
    assert np.isfinite(info["sft_loss_last"])
    fixed = TR.build(adaptive_config(0.0, steps=4))
    _, fixed_info = TR.sft_start(fixed, jax.random.PRNGKey(1))
    assert fixed_info["sft_steps"] == 4.0 and np.isnan(fixed_info["sft_check_maj"])


def test_stopping_rule_config_errors():
    with pytest.raises(harness.ConfigError, match="multiple of sft.check_every"):
        TR.validate_config(adaptive_config(0.5, steps=5, every=2))
    with pytest.raises(harness.ConfigError, match="sft.until_maj"):
        TR.validate_config(adaptive_config(1.5))


def test_cache_key_ignores_the_rule_only_when_it_is_off():
    off, on = adaptive_config(0.0), adaptive_config(0.5)
    for c in (off, on):
        c.sft.cache_dir = "/cache"
    base = tiny_config("grpo")
    base.sft.steps, base.sft.cache_dir = 6, "/cache"
    del base.sft["until_maj"], base.sft["check_every"]
    del base.sft["check_prompts"], base.sft["check_samples"]
    assert TR._sft_cache_path(off) == TR._sft_cache_path(base)  # caches from before the rule
    assert TR._sft_cache_path(on) != TR._sft_cache_path(off)


def test_cache_hit_returns_the_writers_sft_log(tmp_path):
    config = adaptive_config(1.0, steps=4, every=2)
    config.sft.cache_dir = str(tmp_path)
    trainer = TR.build(config)
    lm, info = TR.sft_start(trainer, jax.random.PRNGKey(2), config)
    lm2, info2 = TR.sft_start(trainer, jax.random.PRNGKey(2), config)
    assert info["sft_cached"] == 0.0 and info2["sft_cached"] == 1.0
    assert {k: v for k, v in info2.items() if k != "sft_cached"} == {
        k: v for k, v in info.items() if k != "sft_cached"
    }
    for a, b in zip(jax.tree.leaves(lm), jax.tree.leaves(lm2), strict=True):
        np.testing.assert_array_equal(a, b)
