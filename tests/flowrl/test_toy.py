"""FlowRL's toy contrast (flowrl/toy.py): the exact target, and FlowRL with the raw reward
reaching it while GRPO does not."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from flowrl import toy


def test_target_is_reward_tilted_reference():
    config = toy.default_config()
    task = toy.make_task(config)
    assert int(jnp.sum(task.reward)) == config.num_modes
    want = np.exp(task.ref_logp) * np.exp(config.beta * task.reward)
    np.testing.assert_allclose(np.exp(task.target_logp), want / want.sum(), rtol=1e-5)
    assert float(toy.kl_to_target(task.target_logp, task)) == pytest.approx(0.0, abs=1e-6)
    assert float(toy.kl_to_target(task.ref_logp, task)) > 0.1


def test_flowrl_matches_target_grpo_does_not():
    config = toy.default_config()
    config.steps = 200
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    final = {}
    for method in ("flowrl", "grpo"):
        curves = jax.jit(jax.vmap(toy.make_toy_train(config, method)))(keys)
        final[method] = np.asarray(curves.kl[:, -1])
        assert curves.kl.shape == (2, config.steps // config.log_every + 1)
    assert final["flowrl"].max() < 0.02
    assert final["grpo"].min() > 0.2


def test_toy_config_errors():
    config = toy.default_config()
    config.steps = 15
    with pytest.raises(harness.ConfigError, match="log_every"):
        toy.make_toy_train(config, "flowrl")
    with pytest.raises(harness.ConfigError, match="grpo"):
        toy.make_toy_train(toy.default_config(), "ppo2")
