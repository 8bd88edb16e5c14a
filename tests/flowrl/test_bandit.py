"""Bandit check with a known answer: a single-step policy over K answers with rewards r.

FlowRL's minimiser is pi* = pi_ref exp(beta r_hat) / Z with log Z = log sum pi_ref exp(beta r_hat)
(every residual delta is zero there); GRPO instead concentrates on the best answer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from flowrl.advantages import compute_advantages, outcome_to_token_rewards
from flowrl.losses import LossInputs, default_loss_config, get_loss
from flowrl.types import AdvantageConfig, AdvantageInputs

K = 5
REWARDS = jnp.array([1.0, 0.8, 0.5, 0.0, 0.0])
REF_LOGITS = jnp.array([0.3, -0.5, 0.8, 0.1, -0.2])
BETA = 1.0


def group_advantage(rewards, group_ids):
    mask = jnp.ones((rewards.shape[0], 1))
    inputs = AdvantageInputs(outcome_to_token_rewards(rewards, mask), mask, group_ids)
    return compute_advantages("grpo", inputs, AdvantageConfig()).advantages


@pytest.fixture(scope="module")
def flowrl_run():
    """Minimise FlowRL over the group {all K answers, each once} (length-1 responses)."""
    ref_logp = jax.nn.log_softmax(REF_LOGITS)[:, None]
    adv = group_advantage(REWARDS, jnp.zeros(K, jnp.int32))  # r_hat, f32[K, 1]
    cfg = default_loss_config("flowrl", beta=BETA, is_weight="one")
    opt = optax.adam(0.05)

    def loss_fn(params):
        logp = jax.nn.log_softmax(params["logits"])[:, None]
        inputs = LossInputs(
            logp, jnp.ones((K, 1)), adv, ref_logp=ref_logp, log_z=jnp.full((K,), params["log_z"])
        )
        return get_loss("flowrl")(inputs, cfg)[0]

    def step(carry, _):
        params, state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, state = opt.update(grads, state)
        return (optax.apply_updates(params, updates), state), loss

    params = {"logits": REF_LOGITS, "log_z": jnp.zeros(())}
    (params, _), losses = jax.jit(
        lambda p: jax.lax.scan(step, (p, opt.init(p)), None, length=1500)
    )(params)
    return params, adv[:, 0], losses


def test_flowrl_matches_reward_tilted_reference(flowrl_run):
    params, r_hat, losses = flowrl_run
    pi = jax.nn.softmax(params["logits"])
    target = jax.nn.softmax(jax.nn.log_softmax(REF_LOGITS) + BETA * r_hat)
    kl = float(jnp.sum(pi * (jnp.log(pi) - jnp.log(target))))
    assert float(losses[-1]) < 1e-8 < float(losses[0])
    assert kl < 1e-6
    np.testing.assert_allclose(pi, target, atol=1e-4)
    # log Z converges to the partition function log sum_y pi_ref(y) exp(beta r_hat(y))
    log_partition = jax.nn.logsumexp(jax.nn.log_softmax(REF_LOGITS) + BETA * r_hat)
    assert float(params["log_z"]) == pytest.approx(float(log_partition), abs=1e-3)
    # the target keeps mass on several answers: no collapse onto the best one
    assert float(pi.max()) < 0.6 and float(jnp.sort(pi)[-2]) > 0.1


def test_grpo_concentrates_on_best_answer():
    """On-policy GRPO with G = 16 samples per step from pi (PPO-clip, one update per batch)."""
    G = 16
    cfg = default_loss_config("grpo", kl_coef=0.0)
    opt = optax.adam(0.05)

    def step(carry, key):
        logits, state = carry
        answers = jax.random.categorical(key, logits, shape=(G,))
        adv = group_advantage(REWARDS[answers], jnp.zeros(G, jnp.int32))

        def loss_fn(lg):
            logp = jax.nn.log_softmax(lg)[answers][:, None]
            inputs = LossInputs(logp, jnp.ones((G, 1)), adv, old_logp=jax.lax.stop_gradient(logp))
            return get_loss("grpo")(inputs, cfg)[0]

        grads = jax.grad(loss_fn)(logits)
        updates, state = opt.update(grads, state)
        return (optax.apply_updates(logits, updates), state), jnp.mean(REWARDS[answers])

    keys = jax.random.split(jax.random.PRNGKey(0), 400)
    (logits, _), mean_reward = jax.jit(lambda lg: jax.lax.scan(step, (lg, opt.init(lg)), keys))(
        REF_LOGITS
    )
    pi = jax.nn.softmax(logits)
    assert float(pi[0]) > 0.95
    assert float(jnp.mean(mean_reward[-50:])) > 0.95
