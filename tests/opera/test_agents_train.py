"""Agents (sampling vs ssm.lm.generate, plan parsing), config checks, the tiny and smoke runs."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from experiments.configs import opera as opera_configs
from opera import agents as ag
from opera import stats, train
from opera.world import EOS, NIL, PH0, WorldConfig, make_world
from ssm import lm


def test_greedy_sample_matches_ssm_generate():
    model = lm.make_model({"layer": "transformer", "vocab_size": 20, "d_model": 16,
                           "n_layers": 1, "n_heads": 2, "max_len": 32})  # fmt: skip
    params = lm.init_params(model, jax.random.PRNGKey(0), 8)
    prompt = jax.random.randint(jax.random.PRNGKey(1), (5, 6), 0, 20)
    got = ag.sample(model, params, prompt, jax.random.PRNGKey(2), 7, 0.0)
    want = lm.generate(model, params, prompt, jax.random.PRNGKey(2), 7, temperature=0.0)[:, 6:]
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_parse_plan_and_resolve_on_gold_plans():
    world = make_world(1, WorldConfig(n_train_questions=64, n_test_questions=8))
    plans = jnp.asarray(world.train.plan)
    n_steps, _ = ag.parse_plan(world.vocab, plans)
    np.testing.assert_array_equal(np.asarray(n_steps), world.train.hops)
    bad = plans.at[:, 4].set(PH0 + 1)  # step 2 pointing at itself
    np.testing.assert_array_equal(np.asarray(ag.parse_plan(world.vocab, bad)[0]), 1)
    answers = jnp.asarray(np.stack(world.vocab.name(world.train.chain[:, 1:5]), -1))
    q = ag._resolve(plans[:, 3:6], answers)
    np.testing.assert_array_equal(np.asarray(q[:, 1:]), np.asarray(answers[:, 0]))
    mask = ag.plan_mask(plans)
    np.testing.assert_array_equal(np.asarray(mask.sum(-1)), 3 * world.train.hops + 1)
    assert int(plans[0, 3 * world.train.hops[0]]) == EOS and NIL in np.asarray(plans[0])


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("arms", "mapgrpo,bogus", "config.arms"),
        ("retriever", "tfidf", "config.retriever"),
        ("rl.loss", "nope", "config.rl.loss"),
        ("rl.group_size", 1, "config.rl.group_size"),
        ("rl.stage_updates", (1, 2), "config.rl.stage_updates"),
        ("world.heldout_frac", 1.0, "config.world.heldout_frac"),
    ],
)
def test_bad_config_raises_before_compiling(field, value, match):
    c = opera_configs.get_config("tiny")
    node = c
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(harness.ConfigError, match=match):
        train.validate(c)


def _check_run(workdir, arms):
    with open(os.path.join(workdir, "results.json")) as f:
        res = json.load(f)
    assert set(arms) <= set(res)
    for arm in arms:
        assert np.isfinite(list(res[arm].values())).all()
        assert 0.0 <= res[arm]["eval/em"] <= res[arm]["eval/f1"] <= 1.0
    return res


def test_tiny_run_learns_and_resumes(tmp_path):
    """The default-suite run: SFT + every MAPGRPO stage of a shrunk smoke config."""
    c = opera_configs.get_config("tiny")
    c.progress = False
    final = train.train_and_evaluate(c, str(tmp_path))
    _check_run(str(tmp_path), ["sft", "mapgrpo"])
    rec = harness.read_metrics(str(tmp_path / "sft_multi"))
    assert rec[-1]["sft/plan_nll"] < 0.8 * rec[0]["sft/plan_nll"]
    assert rec[-1]["sft/analysis_nll"] < rec[0]["sft/analysis_nll"]
    stages = harness.read_metrics(str(tmp_path / "mapgrpo"))
    assert len(stages) == sum(c.rl.stage_updates)
    for role in ("plan", "analysis", "rewrite"):
        assert any(f"{role}/reward" in r for r in stages), role
    assert any(r.get("plan/injected", 0) > 0 for r in stages)
    again = train.train_and_evaluate(c, str(tmp_path))  # finished runs are not redone
    assert again == final
    assert "mapgrpo" in stats.table([str(tmp_path)])


@pytest.mark.slow
def test_smoke_preset_shows_learning(tmp_path):
    c = opera_configs.get_config("smoke")
    train.train_and_evaluate(c, str(tmp_path))
    res = _check_run(str(tmp_path), ["sft", "mapgrpo", "sft_single", "single"])
    assert res["sft"]["eval/em"] > 0.2
