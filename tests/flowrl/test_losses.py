"""Policy losses: golden values (arithmetic in comments), gradient identities, masking, registry."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl import losses
from flowrl.aggregation import agg_loss
from flowrl.losses import LossConfig, LossInputs, default_loss_config, get_loss, register_loss
from flowrl.types import LossName

L = math.log


def f32(x):
    return jnp.asarray(x, jnp.float32)


# --------------------------------------------------------------------------- aggregation


def test_agg_modes_on_unequal_lengths():
    loss = f32([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = f32([[1, 1, 1], [1, 0, 0]])
    # token-mean: (1 + 2 + 3 + 4) / 4 = 2.5
    assert agg_loss(loss, mask, "token-mean") == pytest.approx(2.5)
    # seq-mean-token-mean: mean(6/3, 4/1) = 3
    assert agg_loss(loss, mask, "seq-mean-token-mean") == pytest.approx(3.0)
    # seq-mean-token-sum: mean(6, 4) = 5
    assert agg_loss(loss, mask, "seq-mean-token-sum") == pytest.approx(5.0)
    # seq-mean-token-sum-norm: 5 / T = 5 / 3; with the constant L = 4: 5 / 4
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm") == pytest.approx(5 / 3)
    assert agg_loss(loss, mask, "seq-mean-token-sum-norm", max_len=4) == pytest.approx(1.25)
    # An empty (padding) row does not dilute the sequence means: mean(2, 4) stays 3.
    loss3 = jnp.concatenate([loss, f32([[7.0, 7.0, 7.0]])])
    mask3 = jnp.concatenate([mask, f32([[0, 0, 0]])])
    assert agg_loss(loss3, mask3, "seq-mean-token-mean") == pytest.approx(3.0)
    # All empty: 0, and a finite gradient.
    g = jax.grad(lambda x: agg_loss(x, jnp.zeros_like(x), "token-mean"))(loss)
    assert np.all(np.asarray(g) == 0.0)
    with pytest.raises(ValueError, match="agg_mode.*token-mean"):
        agg_loss(loss, mask, "token-sum")


# --------------------------------------------------------------------------- golden values

# Four tokens (a, b, c, d) with ratios rho = (1.5, 0.5, 4, 1) and advantages (1, -1, -1, 2):
#   a: l1 = -1.5, l2 = -1 * clip(1.5, 0.8, 1.2) = -1.2, max = -1.2 (clipped)
#   b: l1 = 0.5,  l2 = 0.8,                            max = 0.8  (clipped)
#   c: l1 = 4,    l2 = 1.2, max = 4, dual clip c = 3:  min(4, 3) = 3
#   d: l1 = l2 = -2
OLD = f32([[-1.0, -1.0, -2.0, -0.5]])
LOGP = OLD + f32([[L(1.5), L(0.5), L(4.0), 0.0]])
ADV = f32([[1.0, -1.0, -1.0, 2.0]])
ONES = jnp.ones((1, 4), jnp.float32)


def test_ppo_golden():
    cfg = LossConfig(clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    loss, m = get_loss("ppo")(LossInputs(LOGP, ONES, ADV, old_logp=OLD), cfg)
    # token-mean: (-1.2 + 0.8 + 3 - 2) / 4 = 0.15
    assert loss == pytest.approx(0.15, abs=1e-6)
    # l2 > l1 on a and b: 2 / 4
    assert m["pg_clipfrac"] == pytest.approx(0.5)
    # dual clip active on c only: 1 / 4
    assert m["pg_clipfrac_lower"] == pytest.approx(0.25)
    # ppo_kl = mean(old - logp) = -(ln 1.5 + ln 0.5 + ln 4 + 0) / 4
    assert m["ppo_kl"] == pytest.approx(-(L(1.5) + L(0.5) + L(4.0)) / 4, abs=1e-6)


def test_dapo_golden_and_equal_to_ppo_at_symmetric_clip():
    inputs = LossInputs(LOGP, ONES, ADV, old_logp=OLD)
    loss, _ = get_loss("dapo")(inputs, default_loss_config("dapo"))
    # clip 0.2 / 0.28, dual c = 10: a: -1.28, b: 0.8, c: min(4, 10) = 4, d: -2
    # token-mean: (-1.28 + 0.8 + 4 - 2) / 4 = 0.38
    assert loss == pytest.approx(0.38, abs=1e-6)
    cfg = LossConfig(clip_low=0.2, clip_high=0.2, dual_clip=3.0)
    assert get_loss("dapo")(inputs, cfg)[0] == pytest.approx(get_loss("ppo")(inputs, cfg)[0])


# Two sequences of length 2: seq0 = tokens (a, b) above, seq1 = (d, padding).
OLD2 = f32([[-1.0, -1.0], [-0.5, -9.0]])
LOGP2 = OLD2 + f32([[L(1.5), L(0.5)], [0.0, 3.0]])
ADV2 = f32([[1.0, -1.0], [2.0, 2.0]])
MASK2 = f32([[1, 1], [1, 0]])


def test_grpo_golden_with_k3_kl():
    # ref differs from logp only on token (0, 0): d = ref - logp = ln 2, k3 = 2 - ln 2 - 1.
    ref = LOGP2 + f32([[L(2.0), 0.0], [0.0, 0.0]])
    inputs = LossInputs(LOGP2, MASK2, ADV2, old_logp=OLD2, ref_logp=ref)
    cfg = default_loss_config("grpo", kl_coef=0.1)
    loss, m = get_loss("grpo")(inputs, cfg)
    # pg: seq0 mean(-1.2, 0.8) = -0.2, seq1 = -2, seq-mean: -1.1
    assert m["pg_loss"] == pytest.approx(-1.1, abs=1e-6)
    k3 = 1.0 - L(2.0)
    # kl: seq0 mean(k3, 0) = k3 / 2, seq1 0, seq-mean k3 / 4
    assert m["kl_loss"] == pytest.approx(k3 / 4, abs=1e-6)
    assert loss == pytest.approx(-1.1 + 0.1 * k3 / 4, abs=1e-6)
    with pytest.raises(ValueError, match="ref_logp"):
        get_loss("grpo")(inputs._replace(ref_logp=None), cfg)


def test_dr_grpo_golden():
    inputs = LossInputs(LOGP2, MASK2, ADV2, old_logp=OLD2)
    loss, _ = get_loss("dr_grpo")(inputs, default_loss_config("dr_grpo"))
    # token sums: seq0 -1.2 + 0.8 = -0.4, seq1 -2; mean -1.2; / T = 2 -> -0.6
    assert loss == pytest.approx(-0.6, abs=1e-6)
    loss, _ = get_loss("dr_grpo")(inputs, default_loss_config("dr_grpo", max_len=4))
    assert loss == pytest.approx(-0.3, abs=1e-6)  # -1.2 / 4


def test_sft_and_reinforce_golden():
    logp = f32([[-1.0, -2.0], [-3.0, -7.0]])
    mask = f32([[1, 1], [1, 0]])
    adv = f32([[1.0, 0.5], [-2.0, 5.0]])
    inputs = LossInputs(logp, mask, adv)
    # SFT token-mean NLL: (1 + 2 + 3) / 3 = 2
    assert get_loss("sft")(inputs, LossConfig())[0] == pytest.approx(2.0)
    # REINFORCE: -A logp = (1, 1, -6) -> token-mean -4 / 3
    assert get_loss("reinforce")(inputs, LossConfig())[0] == pytest.approx(-4 / 3)


def test_gspo_golden_and_equals_grpo_at_length_one():
    # seq0: log-ratios (ln 1.5, ln 1.5) -> s = 1.5, A = 1: clipped to 1.2 -> loss -1.2
    # seq1: log-ratios (ln 2, 0) -> s = sqrt 2, A = -1: max(sqrt 2, 1.2) = sqrt 2
    old = f32([[-1.0, -2.0], [-1.0, -1.0]])
    logp = old + f32([[L(1.5), L(1.5)], [L(2.0), 0.0]])
    adv = f32([[1.0, 1.0], [-1.0, -1.0]])
    inputs = LossInputs(logp, jnp.ones((2, 2)), adv, old_logp=old)
    cfg = default_loss_config("gspo", clip_low=0.2, clip_high=0.2)
    loss, m = get_loss("gspo")(inputs, cfg)
    # seq-mean: (-1.2 + sqrt 2) / 2
    assert loss == pytest.approx((-1.2 + math.sqrt(2.0)) / 2, abs=1e-6)
    assert m["pg_clipfrac"] == pytest.approx(0.5)
    # Length-1 sequences: GSPO's sequence ratio is the token ratio, so GSPO == GRPO (no KL).
    key = jax.random.PRNGKey(0)
    k1, k2, k3 = jax.random.split(key, 3)
    lp = -jax.random.uniform(k1, (6, 1), minval=0.1, maxval=2.0)
    ol = lp + 0.4 * jax.random.normal(k2, (6, 1))
    a = jax.random.normal(k3, (6, 1))
    cfg = LossConfig(clip_low=0.2, clip_high=0.28, dual_clip=None)

    def f(name, x):
        return get_loss(name)(LossInputs(x, jnp.ones((6, 1)), a, old_logp=ol), cfg)[0]

    both = jax.jit(lambda x: [jax.value_and_grad(lambda y: f(n, y))(x) for n in ("gspo", "grpo")])
    (v_gspo, g_gspo), (v_grpo, g_grpo) = both(lp)
    np.testing.assert_allclose(v_gspo, v_grpo, rtol=1e-6)
    np.testing.assert_allclose(g_gspo, g_grpo, rtol=1e-5)


def test_cispo_golden():
    # rho = (1.5, 0.5), A = (1, 1), logp = (-1, -2); no lower bound, upper 1.28:
    # weights sg(clip) = (1.28, 0.5); loss = token-mean(-w A logp) = (1.28 + 1.0) / 2 = 1.14
    logp = f32([[-1.0, -2.0]])
    old = logp - f32([[L(1.5), L(0.5)]])
    inputs = LossInputs(logp, jnp.ones((1, 2)), jnp.ones((1, 2)), old_logp=old)
    loss, m = get_loss("cispo")(inputs, default_loss_config("cispo"))
    assert loss == pytest.approx(1.14, abs=1e-6)
    assert m["pg_clipfrac"] == pytest.approx(0.5)
    # Every token keeps a gradient: d loss / d logp = -w A / 2 = (-0.64, -0.25)
    g = jax.grad(
        lambda x: get_loss("cispo")(inputs._replace(logp=x), default_loss_config("cispo"))[0]
    )(logp)
    np.testing.assert_allclose(g, [[-0.64, -0.25]], rtol=1e-6)


# FlowRL, beta = 2:
#   seq0: avg logp (-1 - 3)/2 = -2, avg ref -2, r_hat 0.5, log Z 0.3:
#         delta = 0.3 - 2 - 2 * 0.5 + 2 = -0.7, delta^2 = 0.49
#   seq1: avg logp -1, avg ref -1.5, r_hat -0.5, log Z 0.3:
#         delta = 0.3 - 1 + 1 + 1.5 = 1.8, delta^2 = 3.24
FL_LOGP = f32([[-1.0, -3.0], [-1.0, -4.0]])
FL_MASK = f32([[1, 1], [1, 0]])
FL_REF = f32([[-2.0, -2.0], [-1.5, 0.0]])
FL_ADV = f32([[0.5, 0.5], [-0.5, -0.5]])
FL_LOGZ = f32([0.3, 0.3])
# old: seq0 log w = sum(logp - old) = 0.5 + 0.5 = 1 -> w = e; seq1 log w = -0.1 (token 2 masked)
FL_OLD = FL_LOGP - f32([[0.5, 0.5], [-0.1, 5.0]])
FL_INPUTS = LossInputs(FL_LOGP, FL_MASK, FL_ADV, old_logp=FL_OLD, ref_logp=FL_REF, log_z=FL_LOGZ)


@pytest.mark.parametrize(
    "weight, expected",
    [
        ("one", (0.49 + 3.24) / 2),  # 1.865
        ("clip", (1.2 * 0.49 + math.exp(-0.1) * 3.24) / 2),  # w0 = min(e, 1.2)
        ("max", (math.e * 0.49 + math.exp(-0.1) * 3.24) / 2),  # e < 10: uncapped
        ("unclipped", (math.e * 0.49 + math.exp(-0.1) * 3.24) / 2),
    ],
)
def test_flowrl_golden(weight, expected):
    cfg = LossConfig(beta=2.0, is_weight=weight, clip_low=0.2, clip_high=0.2)
    loss, m = get_loss("flowrl")(FL_INPUTS, cfg)
    assert loss == pytest.approx(expected, abs=1e-5)
    assert m["flowrl_delta"] == pytest.approx((-0.7 + 1.8) / 2, abs=1e-6)


def test_flowrl_ablations():
    # no log Z: delta = (-1.0, 1.5) -> (1 + 2.25) / 2 = 1.625
    cfg = LossConfig(beta=2.0, is_weight="one", use_log_z=False)
    assert get_loss("flowrl")(FL_INPUTS._replace(log_z=None), cfg)[0] == pytest.approx(1.625)
    # pi_old as reference: avg old seq0 = avg(-1.5, -3.5) = -2.5, seq1 = -0.9
    #   delta0 = 0.3 - 2 - 1 + 2.5 = -0.2; delta1 = 0.3 - 1 + 1 + 0.9 = 1.2 -> (0.04 + 1.44) / 2
    cfg = LossConfig(beta=2.0, is_weight="one", flowrl_reference="old")
    assert get_loss("flowrl")(FL_INPUTS._replace(ref_logp=None), cfg)[0] == pytest.approx(0.74)
    with pytest.raises(ValueError, match="log_z"):
        get_loss("flowrl")(FL_INPUTS._replace(log_z=None), LossConfig())


def test_flowrl_log_z_gradient_vanishes_at_optimum():
    cfg = LossConfig(beta=2.0, is_weight="clip")
    group_ids = jnp.array([0, 0], jnp.int32)
    z_opt = losses.flowrl_optimal_log_z(FL_INPUTS, cfg, group_ids)
    # residuals without Z: (-1.0, 1.5), weights (1.2, e^-0.1): log Z* = -(1.2 * -1 + w1 * 1.5) / (1.2 + w1)
    w1 = math.exp(-0.1)
    assert z_opt[0] == pytest.approx(-(-1.2 + 1.5 * w1) / (1.2 + w1), abs=1e-6)

    def loss_of_z(z):
        return get_loss("flowrl")(FL_INPUTS._replace(log_z=jnp.full((2,), z)), cfg)[0]

    assert abs(float(jax.grad(loss_of_z)(z_opt[0]))) < 1e-6
    assert abs(float(jax.grad(loss_of_z)(z_opt[0] + 0.5))) > 0.1


def test_flowrl_gradient_matches_derivation():
    # d L / d logp[b, t] = (2 / N) w_b delta_b m_bt / |y_b|  (FLOWRL.md §3.2), N = 2 sequences
    cfg = LossConfig(beta=2.0, is_weight="one")
    g = jax.grad(lambda x: get_loss("flowrl")(FL_INPUTS._replace(logp=x), cfg)[0])(FL_LOGP)
    expected = [[-0.7 / 2, -0.7 / 2], [1.8, 0.0]]
    np.testing.assert_allclose(g, expected, rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------------- random batches

B, T, V = 6, 5, 7


@pytest.fixture(scope="module")
def batch():
    return _make_batch()  # one compile instead of a dozen eager dispatches


@jax.jit
def _make_batch():
    """Random logits theta f32[B, T, V] (the differentiated parameters), sampled tokens, a
    right-padded mask, old/ref log-probs near the current ones, per-sequence advantages."""
    k = jax.random.split(jax.random.PRNGKey(42), 6)
    theta = jax.random.normal(k[0], (B, T, V))
    tokens = jax.random.randint(k[1], (B, T), 0, V)
    lengths = jnp.array([5, 3, 1, 4, 5, 2])
    mask = (jnp.arange(T)[None] < lengths[:, None]).astype(jnp.float32)
    logp0 = token_logp(theta, tokens)
    old = logp0 + 0.3 * jax.random.normal(k[2], (B, T))
    ref = logp0 + 0.3 * jax.random.normal(k[3], (B, T))
    adv = jnp.broadcast_to(jax.random.normal(k[4], (B, 1)), (B, T)) * mask
    log_z = jax.random.normal(k[5], (B,))
    return dict(theta=theta, tokens=tokens, mask=mask, old=old, ref=ref, adv=adv, log_z=log_z)


def token_logp(theta, tokens):
    return jnp.take_along_axis(jax.nn.log_softmax(theta), tokens[..., None], axis=-1)[..., 0]


def make_inputs(b, theta, on_policy=False):
    logp = token_logp(theta, b["tokens"])
    old = jax.lax.stop_gradient(logp) if on_policy else b["old"]
    return LossInputs(logp, b["mask"], b["adv"], old_logp=old, ref_logp=b["ref"], log_z=b["log_z"])


@pytest.mark.parametrize("name", ["ppo", "grpo", "dr_grpo", "dapo", "gspo", "cispo"])
def test_on_policy_gradient_equals_reinforce(batch, name):
    """At rho = 1 every clipped/IS loss has the REINFORCE gradient -A grad log pi (same agg)."""
    cfg = default_loss_config(name, kl_coef=0.0)
    mode = cfg.agg_mode or losses._DEFAULT_AGG[name]
    rf_cfg = LossConfig(agg_mode=mode, max_len=cfg.max_len)

    def f(theta):
        return get_loss(name)(make_inputs(batch, theta, on_policy=True), cfg)[0]

    def rf(theta):
        return get_loss("reinforce")(make_inputs(batch, theta), rf_cfg)[0]

    g, g_ref = jax.jit(jax.grad(f))(batch["theta"]), jax.jit(jax.grad(rf))(batch["theta"])
    assert float(jnp.max(jnp.abs(g_ref))) > 1e-3
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", losses.loss_names())
def test_registry_entry_shapes_finite_and_masked_grad(batch, name):
    cfg = default_loss_config(name, kl_coef=0.01)
    inputs = make_inputs(batch, batch["theta"])
    # Garbage on padded positions must not leak into the loss or its gradient.
    pad = 1.0 - batch["mask"]
    junk = inputs._replace(
        logp=inputs.logp - 50.0 * pad,
        old_logp=inputs.old_logp + 30.0 * pad,
        ref_logp=inputs.ref_logp - 40.0 * pad,
        advantages=inputs.advantages + 7.0 * pad,
    )

    @jax.jit
    def run(inp):
        (loss, metrics), g = jax.value_and_grad(
            lambda lp: get_loss(name)(inp._replace(logp=lp), cfg), has_aux=True
        )(inp.logp)
        return loss, metrics, g

    loss, metrics, g = run(inputs)
    loss_j, _, g_j = run(junk)
    assert loss.shape == () and np.isfinite(loss)
    for key, value in metrics.items():
        assert value.shape == () and np.isfinite(value), key
    assert np.all(np.asarray(g)[np.asarray(pad) > 0] == 0.0)
    assert np.all(np.asarray(g_j)[np.asarray(pad) > 0] == 0.0)
    np.testing.assert_allclose(loss_j, loss, rtol=1e-6)
    np.testing.assert_allclose(g_j, g, rtol=1e-6, atol=1e-8)
    assert float(jnp.max(jnp.abs(g))) > 0.0


def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown policy loss 'grpoo'.*'cispo'.*'sft'"):
        get_loss("grpoo")
    with pytest.raises(ValueError, match="already registered"):
        register_loss(LossName.GRPO)(lambda inputs, config: (0.0, {}))
    with pytest.raises(ValueError, match="policy loss name"):
        register_loss("my_loss")
    assert get_loss(LossName.FLOWRL) is get_loss("flowrl")
    with pytest.raises(ValueError, match="is_weight='clipped'.*'max'"):
        LossConfig(is_weight="clipped")
    with pytest.raises(ValueError, match="LossInputs.old_logp is required"):
        get_loss("ppo")(LossInputs(ONES, ONES, ONES), LossConfig())
    with pytest.raises(ValueError, match="LossInputs.mask has shape"):
        get_loss("sft")(LossInputs(ONES, jnp.ones((1, 3)), ONES), LossConfig())
