"""Advantage estimators and KL estimators: golden values, loop references, registry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl import advantages as adv_lib
from flowrl import kl
from flowrl.types import AdvantageConfig, AdvantageInputs, AdvantageName


def outcome_inputs(scores, group_ids, lengths, T=3, seq_valid=None):
    mask = (jnp.arange(T)[None] < jnp.asarray(lengths)[:, None]).astype(jnp.float32)
    tok = adv_lib.outcome_to_token_rewards(jnp.asarray(scores, jnp.float32), mask)
    return AdvantageInputs(tok, mask, jnp.asarray(group_ids, jnp.int32), seq_valid=seq_valid)


def seq_adv(out, inputs):
    # The advantage is constant over each response: read it at the first token.
    return np.asarray(out.advantages[:, 0])


def test_outcome_to_token_rewards():
    mask = jnp.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    tok = adv_lib.outcome_to_token_rewards(jnp.array([2.0, 3.0, 4.0]), mask)
    np.testing.assert_array_equal(tok, [[0, 2, 0], [0, 0, 3], [0, 0, 0]])


def test_grpo_population_and_unbiased_std():
    inputs = outcome_inputs([1, 0, 0, 1], [0, 0, 0, 0], [3, 2, 1, 3])
    # mean 0.5; unbiased std = sqrt(4 * 0.25 / 3) = 0.57735 -> A = +-0.5 / 0.57735 = +-0.866
    out = adv_lib.compute_advantages("grpo", inputs, AdvantageConfig(unbiased_std=True))
    np.testing.assert_allclose(seq_adv(out, inputs), [0.8660, -0.8660, -0.8660, 0.8660], atol=1e-4)
    # population std 0.5 -> A = +-1
    out = adv_lib.compute_advantages("grpo", inputs, AdvantageConfig(unbiased_std=False))
    np.testing.assert_allclose(seq_adv(out, inputs), [1, -1, -1, 1], atol=1e-5)
    # broadcast to every response token, zero on padding
    np.testing.assert_array_equal(out.advantages * (1 - inputs.mask), 0.0)
    np.testing.assert_allclose(out.advantages[1], [-1, -1, 0], atol=1e-5)


def test_grpo_groups_equal_and_single():
    # group 0 = rows 0, 2 (scores 1, 3); group 1 = rows 1, 3 (all equal 5); group 2 = row 4 alone
    inputs = outcome_inputs([1, 5, 3, 5, 2], [0, 1, 0, 1, 2], [1, 1, 1, 1, 1])
    out = adv_lib.compute_advantages("grpo", inputs, AdvantageConfig(eps=1e-6))
    a = seq_adv(out, inputs)
    # group 0: mean 2, unbiased std sqrt(2): (-1, +1) / sqrt 2
    np.testing.assert_allclose(a[[0, 2]], [-1 / math.sqrt(2), 1 / math.sqrt(2)], atol=1e-5)
    np.testing.assert_array_equal(a[[1, 3]], [0.0, 0.0])  # all-equal group: 0, no NaN
    assert a[4] == pytest.approx(2.0 / (1 + 1e-6))  # size-1 group: mean 0, std 1 (verl)


def test_dr_grpo_and_rloo():
    inputs = outcome_inputs([1, 0, 0, 1, 3], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1])
    a = seq_adv(adv_lib.compute_advantages("dr_grpo", inputs), inputs)
    np.testing.assert_allclose(a, [0.5, -0.5, -0.5, 0.5, 3.0])  # r - mean; single group: r
    a = seq_adv(adv_lib.compute_advantages("rloo", inputs), inputs)
    # leave-one-out: 1 - (0 + 0 + 1) / 3 = 2/3, 0 - 2/3 = -2/3; single group keeps r
    np.testing.assert_allclose(a, [2 / 3, -2 / 3, -2 / 3, 2 / 3, 3.0], rtol=1e-6)


def test_padding_rows_excluded():
    # Row 2 is padding (seq_valid 0) in group 0: stats come from rows 0, 1 only.
    inputs = outcome_inputs(
        [1, 0, 100, 1], [0, 0, 0, 1], [1, 1, 1, 1], seq_valid=jnp.array([1.0, 1.0, 0.0, 1.0])
    )
    a = seq_adv(adv_lib.compute_advantages("dr_grpo", inputs), inputs)
    np.testing.assert_allclose(a, [0.5, -0.5, 0.0, 1.0])


def np_returns(r, m, gamma):
    out = np.zeros_like(r)
    for b in range(r.shape[0]):
        g = 0.0
        for t in reversed(range(r.shape[1])):
            g = r[b, t] * m[b, t] + gamma * g
            out[b, t] = g * m[b, t]
    return out


def np_gae(r, v, m, gamma, lam):
    adv = np.zeros_like(r)
    for b in range(r.shape[0]):
        last = 0.0
        length = int(m[b].sum())
        for t in reversed(range(length)):
            next_v = v[b, t + 1] if t + 1 < length else 0.0
            delta = r[b, t] + gamma * next_v - v[b, t]
            last = delta + gamma * lam * last
            adv[b, t] = last
    return adv


def np_whiten(x, m):
    sel = x[m > 0]
    return (x - sel.mean()) / np.sqrt(sel.var(ddof=1) + 1e-8) * m


@pytest.fixture(scope="module")
def token_batch():
    k1, k2 = jax.random.split(jax.random.PRNGKey(3))
    lengths = np.array([6, 3, 1, 5])
    m = (np.arange(6)[None] < lengths[:, None]).astype(np.float32)
    r = np.asarray(jax.random.normal(k1, (4, 6))) * m
    v = np.asarray(jax.random.normal(k2, (4, 6)))
    return r.astype(np.float32), v.astype(np.float32), m


def test_gae_matches_loop(token_batch):
    r, v, m = token_batch
    cfg = AdvantageConfig(gamma=0.9, lam=0.8, whiten_gae=False)
    out = adv_lib.compute_advantages("gae", AdvantageInputs(r, m, values=v), cfg)
    ref = np_gae(r, v * m, m, 0.9, 0.8)
    np.testing.assert_allclose(out.advantages, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.returns, (ref + v) * m, rtol=1e-5, atol=1e-6)
    cfg = AdvantageConfig(gamma=0.9, lam=0.8, whiten_gae=True)
    out = adv_lib.compute_advantages("gae", AdvantageInputs(r, m, values=v), cfg)
    np.testing.assert_allclose(out.advantages, np_whiten(ref, m), rtol=1e-4, atol=1e-5)


def test_reinforce_plus_plus_matches_loop(token_batch):
    r, _, m = token_batch
    cfg = AdvantageConfig(gamma=0.95)
    out = adv_lib.compute_advantages("reinforce_plus_plus", AdvantageInputs(r, m), cfg)
    ret = np_returns(r, m, 0.95)
    np.testing.assert_allclose(out.returns, ret, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.advantages, np_whiten(ret, m), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", adv_lib.advantage_names())
def test_registry_entries(token_batch, name):
    r, v, m = token_batch
    inputs = AdvantageInputs(r, m, jnp.array([0, 0, 1, 1]), values=v)
    out = jax.jit(lambda i: adv_lib.get_advantage(name)(i, AdvantageConfig()))(inputs)
    assert out.advantages.shape == r.shape and out.returns.shape == r.shape
    assert np.all(np.isfinite(out.advantages)) and np.all(np.isfinite(out.returns))
    np.testing.assert_array_equal(np.asarray(out.advantages)[m == 0], 0.0)


def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown advantage estimator 'ppo'.*'gae'.*'rloo'"):
        adv_lib.get_advantage("ppo")
    with pytest.raises(ValueError, match="already registered"):
        adv_lib.register_advantage(AdvantageName.GAE)(lambda i, c: None)
    with pytest.raises(ValueError, match="values is required"):
        adv_lib.compute_advantages("gae", AdvantageInputs(jnp.ones((1, 2)), jnp.ones((1, 2))))
    with pytest.raises(ValueError, match="group_ids is required"):
        adv_lib.compute_advantages("grpo", AdvantageInputs(jnp.ones((1, 2)), jnp.ones((1, 2))))
    with pytest.raises(ValueError, match="gamma=1.5"):
        AdvantageConfig(gamma=1.5)


# --------------------------------------------------------------------------- KL


def test_kl_golden():
    # d = ref - logp = -ln 2: k1 = ln 2, k2 = (ln 2)^2 / 2, k3 = e^{-ln 2} + ln 2 - 1 = ln 2 - 0.5
    logp, ref = jnp.array([-1.0]), jnp.array([-1.0 - math.log(2.0)])
    assert kl.kl_estimate(logp, ref, "k1")[0] == pytest.approx(math.log(2.0))
    assert kl.kl_estimate(logp, ref, "k2")[0] == pytest.approx(0.5 * math.log(2.0) ** 2)
    assert kl.kl_estimate(logp, ref, "k3")[0] == pytest.approx(math.log(2.0) - 0.5)
    with pytest.raises(ValueError, match="kl_type='low_var_kl'.*'k3'"):
        kl.kl_estimate(logp, ref, "low_var_kl")


def test_k3_nonnegative_and_clamped():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    logp = 5.0 * jax.random.normal(k1, (10_000,))
    ref = logp + jnp.concatenate(
        [1e-4 * jax.random.normal(k2, (5000,)), 8.0 * jax.random.normal(k2, (5000,))]
    )
    k3 = kl.kl_estimate(logp, ref, "k3")
    assert float(jnp.min(k3)) >= 0.0
    assert float(jnp.max(k3)) <= kl.K3_CLAMP
    assert float(kl.kl_estimate(logp, logp, "k3").max()) == 0.0


def test_kl_penalty_and_loss():
    logp = jnp.array([[-1.0, -2.0], [-1.0, -1.0]])
    ref = jnp.array([[-1.5, -2.0], [-1.0, -3.0]])
    mask = jnp.array([[1.0, 1.0], [1.0, 0.0]])
    r = jnp.array([[0.0, 1.0], [2.0, 0.0]])
    pen, mean_kl = kl.apply_kl_penalty(r, logp, ref, mask, coef=0.1, kind="k1")
    # k1 = logp - ref = (0.5, 0), (0, masked): r - 0.1 k1
    np.testing.assert_allclose(pen, [[-0.05, 1.0], [2.0, 0.0]], rtol=1e-6)
    assert mean_kl == pytest.approx(0.25)  # per-sequence sums (0.5, 0)
    # token-mean k2 loss: (0.125 + 0 + 0) / 3
    assert kl.kl_loss(logp, ref, mask, "k2") == pytest.approx(0.125 / 3)
