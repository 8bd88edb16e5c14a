"""UPGE reproduces SFT/REINFORCE/PPO/GRPO/CISPO/GSPO gradients; HPT switch and mixed loss."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl import upge
from flowrl.losses import LossConfig, LossInputs, default_loss_config, get_loss

B, T, V = 6, 5, 7


def token_logp(theta, tokens):
    return jnp.take_along_axis(jax.nn.log_softmax(theta), tokens[..., None], axis=-1)[..., 0]


@pytest.fixture(scope="module")
def batch():
    return _make_batch()  # one compile instead of a dozen eager dispatches


@jax.jit
def _make_batch():
    k = jax.random.split(jax.random.PRNGKey(7), 5)
    theta = jax.random.normal(k[0], (B, T, V))
    tokens = jax.random.randint(k[1], (B, T), 0, V)
    lengths = jnp.array([5, 3, 1, 4, 5, 2])
    mask = (jnp.arange(T)[None] < lengths[:, None]).astype(jnp.float32)
    # Old log-probs far enough from the current ones that clipping is active on many tokens.
    old = token_logp(theta, tokens) + 0.4 * jax.random.normal(k[2], (B, T))
    seq_adv = jnp.broadcast_to(jax.random.normal(k[3], (B, 1)), (B, T)) * mask
    tok_adv = jax.random.normal(k[4], (B, T)) * mask  # GAE-like, varies per token
    return dict(theta=theta, tokens=tokens, mask=mask, old=old, seq_adv=seq_adv, tok_adv=tok_adv)


# (UPGE instance, loss name, advantage kind, loss config): PPO with token advantages and dual clip,
# GRPO/GSPO with group advantages, CISPO with its clipped weight.
CASES = [
    ("sft", "sft", "seq", LossConfig(agg_mode="token-mean")),
    ("reinforce", "reinforce", "tok", LossConfig(agg_mode="token-mean")),
    ("ppo", "ppo", "tok", LossConfig(clip_low=0.2, clip_high=0.28, dual_clip=1.3)),
    ("grpo", "grpo", "seq", LossConfig(agg_mode="seq-mean-token-mean", dual_clip=None)),
    ("cispo", "cispo", "tok", default_loss_config("cispo", clip_high=0.1, agg_mode="token-mean")),
    (
        "gspo",
        "gspo",
        "seq",
        LossConfig(agg_mode="seq-mean-token-mean", clip_low=0.1, clip_high=0.1),
    ),
]


@pytest.mark.parametrize("instance, loss_name, adv, cfg", CASES, ids=[c[0] for c in CASES])
def test_upge_reproduces_loss_gradient(batch, instance, loss_name, adv, cfg):
    def inputs(theta):
        a = batch["seq_adv"] if adv == "seq" else batch["tok_adv"]
        return LossInputs(token_logp(theta, batch["tokens"]), batch["mask"], a, batch["old"])

    cfg_u = cfg if cfg.agg_mode else dataclasses.replace(cfg, agg_mode="token-mean")
    g_loss = jax.grad(lambda th: get_loss(loss_name)(inputs(th), cfg)[0])(batch["theta"])
    g_upge, metrics = jax.grad(
        lambda th: upge.upge_loss(inputs(th), instance, cfg_u), has_aux=True
    )(batch["theta"])
    assert float(jnp.max(jnp.abs(g_loss))) > 1e-3
    np.testing.assert_allclose(g_upge, g_loss, rtol=1e-5, atol=1e-7)
    if instance in ("ppo", "grpo", "gspo"):
        # The mask must actually remove some tokens, or the comparison would not test it.
        assert 0.0 < float(metrics["stable_frac"]) < 1.0


def test_upge_parts_and_errors(batch):
    inp = LossInputs(batch["old"], batch["mask"], batch["seq_adv"], batch["old"])
    np.testing.assert_array_equal(upge.log_denominator("one", inp), jnp.zeros((B, T)))
    np.testing.assert_array_equal(
        upge.stabilization_mask("clip", inp, LossConfig()), jnp.ones((B, T))
    )  # rho = 1: nothing clipped
    with pytest.raises(ValueError, match="denominator='pi'.*'theta'"):
        upge.log_denominator("pi", inp)
    with pytest.raises(ValueError, match="unknown UPGE instance 'luffy'.*'srft'"):
        upge.upge_loss(inp, "luffy", LossConfig())
    with pytest.raises(ValueError, match="old_logp is required"):
        upge.upge_loss(inp._replace(old_logp=None), "ppo", LossConfig())


def test_hpt_switch_and_soft():
    k = jnp.array([0, 1, 2, 3, 4, 5, 8])
    on, sft = upge.hpt_switch(k, gate=0)
    np.testing.assert_array_equal(on, [0, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(sft, [1, 0, 0, 0, 0, 0, 0])
    on, _ = upge.hpt_switch(k, gate=2)
    np.testing.assert_array_equal(on, [0, 0, 0, 1, 1, 1, 1])
    on, sft = upge.hpt_soft_coefficients(k)
    np.testing.assert_array_equal(on, [0, 0, 0.125, 0.25, 0.5, 1, 1])
    np.testing.assert_array_equal(sft, [1, 1, 0.5, 0.25, 0.125, 0, 0])
    with pytest.raises(ValueError, match="strategy='hard'"):
        upge.HPTConfig(strategy="hard")


def test_hpt_mixed_loss_golden():
    # Prompt 0: 0 correct -> SFT on its demonstration; prompt 1: 3 correct -> RL on its rollouts.
    num_correct = jnp.array([0, 3])
    sft = LossInputs(jnp.array([[-1.0, -2.0], [-5.0, -5.0]]), jnp.ones((2, 2)), jnp.zeros((2, 2)))
    # Rollouts 0, 1 belong to prompt 0 (dropped); 2, 3 to prompt 1.
    logp = jnp.array([[-1.0, -1.0], [-1.0, -1.0], [-1.0, -2.0], [-1.0, -3.0]])
    old = logp - jnp.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [jnp.log(2.0), 0.0]])
    adv = jnp.array([[9.0, 9.0], [9.0, 9.0], [1.0, 1.0], [-0.5, -0.5]])
    mask = jnp.array([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    rl = LossInputs(logp, mask, adv, old)
    cfg = upge.HPTConfig(gate=0, sft_coef=0.5)
    loss, m = upge.hpt_mixed_loss(
        rl, sft, jnp.array([0, 0, 1, 1]), jnp.array([0, 1]), num_correct, cfg
    )
    # L_SFT: token-mean NLL of prompt 0's demonstration = (1 + 2) / 2 = 1.5
    assert m["loss_sft"] == pytest.approx(1.5)
    # L_RL (no clip, -A rho): seq2 sum = -1 - 1 = -2; seq3 = -(-0.5) * 2 = 1 (one token);
    #   mean over the kept sequences = -0.5, / padded length 2 = -0.25
    assert m["loss_rl"] == pytest.approx(-0.25)
    assert loss == pytest.approx(0.5 * 1.5 - 0.25)
    assert m["sft_fraction"] == pytest.approx(0.5)
