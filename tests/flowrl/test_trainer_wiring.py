"""Trainer wiring that the loss unit tests cannot see: log-probs scored at the rollout temperature,
``old_logp`` from the rollout policy (not the reference), KL in the reward, DAPO overlong shaping
and dynamic-sampling bounds, HPT's soft schedule, FlowRL weight variants, PPO critic warm-up and
value clipping, learning-rate schedules, the continued-SFT control arm.

The reference policy differs from the policy here (the policy is perturbed after init), unlike
in tests/flowrl/test_trainer.py where both start equal and a swapped ``old_logp`` goes unseen.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from flowrl import losses
from flowrl import tasks as T
from flowrl import trainer as TR
from flowrl.advantages import compute_advantages, outcome_to_token_rewards
from flowrl.kl import kl_estimate
from flowrl.types import AdvantageConfig, AdvantageInputs, LossInputs
from tests.flowrl.test_trainer import G, P, make_groups, tiny_config

TEMP = 0.7
KL_IN_REWARD = 0.5


@pytest.fixture(scope="module")
def wired():
    """GRPO at T = 0.7 with KL in the reward, 2 minibatches; the policy is the reference plus
    noise (ref != policy)."""
    config = tiny_config("grpo", temperature=TEMP, kl_in_reward=KL_IN_REWARD, num_minibatches=2)
    tr = TR.build(config)
    lm = tr.policy.init(jax.random.PRNGKey(0), 16).lm
    state = tr.init_from_lm(jax.random.PRNGKey(1), lm)
    leaves, treedef = jax.tree.flatten(state.params.lm)
    keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
    noisy = [
        x + 0.3 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
    ]
    state = state.replace(params=state.params._replace(lm=jax.tree.unflatten(treedef, noisy)))
    groups = make_groups(tr, [[1, 0, 0, 1], [0, 1, 1, 0]])
    batch, stats = jax.jit(tr.prepare)(
        state.params, state.ref_lm, groups, jnp.ones(P, bool), state.key
    )
    return tr, state, groups, batch, stats


def test_logp_scored_at_rollout_temperature_from_rollout_policy(wired):
    tr, state, _, batch, stats = wired
    Lp = tr.task.prompt_len
    fwd = jax.jit(tr.policy.forward, static_argnums=(2,))
    pol_T = fwd(state.params, batch.tokens, Lp, TEMP).logp
    pol_1 = fwd(state.params, batch.tokens, Lp, 1.0).logp
    ref_T = fwd(state.params._replace(lm=state.ref_lm), batch.tokens, Lp, TEMP).logp
    m = np.asarray(batch.mask) > 0
    # The three candidates really differ, so each assertion below can fail.
    assert np.abs(np.asarray(pol_T - pol_1))[m].max() > 0.05
    assert np.abs(np.asarray(pol_T - ref_T))[m].max() > 0.05
    np.testing.assert_allclose(np.asarray(batch.old_logp)[m], np.asarray(pol_T)[m], atol=1e-5)
    np.testing.assert_allclose(np.asarray(batch.ref_logp)[m], np.asarray(ref_T)[m], atol=1e-5)
    assert float(stats["train/kl_ref"]) > 1e-3  # the policy really left the reference


def test_ratio_is_one_on_first_minibatch(wired):
    tr, state, _, batch, _ = wired
    mbs = TR.split_minibatches(TR.make_setup(tr.config), batch, jax.random.PRNGKey(0))
    first = jax.tree.map(lambda x: x[0], mbs)
    _, m = jax.jit(tr.objective)(state.params, first)
    assert abs(float(m["loss/ppo_kl"])) < 1e-5
    assert float(m["loss/pg_clipfrac"]) == 0.0


def test_kl_in_reward_shifts_outcome_rewards(wired):
    tr, _, groups, batch, stats = wired
    B = P * G
    kl_seq = np.sum(
        np.asarray(kl_estimate(batch.old_logp, batch.ref_logp, "k1") * batch.mask), axis=-1
    )
    assert np.ptp(kl_seq) > 1e-3  # the shift differs between sequences, so it changes A
    inputs = AdvantageInputs(
        outcome_to_token_rewards(groups.rewards.reshape(B) - KL_IN_REWARD * kl_seq, batch.mask),
        batch.mask,
        jnp.repeat(jnp.arange(P), G),
    )
    want = compute_advantages("grpo", inputs, AdvantageConfig()).advantages
    np.testing.assert_allclose(batch.advantages, want, atol=1e-4)
    assert float(stats["train/kl_reward"]) == pytest.approx(kl_seq.mean(), rel=1e-4)


def test_overlong_shaping_applied_to_rewards_not_scores():
    config = tiny_config("dapo", overlong_buffer=4, overlong_penalty=1.0)
    tr = TR.build(config)
    R = tr.task.response_len
    groups = make_groups(tr, [[1, 0, 0, 1], [0, 1, 1, 0]])
    lengths = np.asarray(T.response_mask(groups.responses.reshape(P * G, R))).sum(-1)
    lengths = lengths.reshape(P, G)
    # DAPO: exceed = |y| - (L_max - L_buf), penalty min(-exceed / L_buf, 0), L_max = R.
    want = np.minimum(-(lengths - (R - 4)) / 4.0, 0.0)
    assert want.min() < 0  # the demonstrations reach into the buffer
    np.testing.assert_allclose(groups.shaping, want, atol=1e-6)
    np.testing.assert_allclose(groups.rewards, np.asarray(groups.scores) + want, atol=1e-6)
    with pytest.raises(harness.ConfigError, match="overlong_buffer"):
        TR.build(tiny_config("dapo", overlong_buffer=R + 1))


def test_dynamic_sampling_uses_dapo_bounds_and_raises_when_unfilled():
    config = tiny_config("dapo")
    s = TR.make_setup(config)
    assert (config.rl.gen_factor, config.rl.max_gen_batches) == (3, 10)
    assert s.P_gen == 3 * P
    fake = TR.Trainer(*([None] * len(TR.Trainer._fields)))._replace(config=config, spec=s.spec)
    TR.check_filled(fake, {"train/valid_groups": 1.0})
    with pytest.raises(TR.UnfilledBatchError, match="rl.max_gen_batches=10"):
        TR.check_filled(fake, {"train/valid_groups": 0.5})
    config.rl.allow_unfilled = True
    TR.check_filled(fake._replace(config=config), {"train/valid_groups": 0.5})
    grpo = tiny_config("grpo")
    TR.check_filled(
        fake._replace(config=grpo, spec=TR.get_algorithm("grpo")), {"train/valid_groups": 0.5}
    )


def test_hpt_soft_schedule_and_continued_sft_weights():
    k = jnp.arange(8)
    soft = TR.HPT_STRATEGIES.get(TR.get_algorithm("hpt_soft").hpt_strategy)
    on, sft = soft(k, TR.get_algorithm("hpt_soft").hpt_gate)
    # FLOWRL.md §4.3 soft table (soft_type=1), k = 0 taken as pure SFT.
    np.testing.assert_array_equal(on, [0, 0, 0.125, 0.25, 0.5, 1, 1, 1])
    np.testing.assert_array_equal(sft, [1, 1, 0.5, 0.25, 0.125, 0, 0, 0])
    spec = TR.get_algorithm("sft_continued")
    on, sft = TR.HPT_STRATEGIES.get(spec.hpt_strategy)(jnp.arange(65), spec.hpt_gate)
    assert float(jnp.max(on)) == 0.0 and float(jnp.min(sft)) == 1.0
    assert spec.loss == "sft" and spec.sft_coef == 1.0


def test_hpt_soft_prepare_weights(trainers_soft):
    tr, prepare = trainers_soft
    state = tr.init_from_lm(jax.random.PRNGKey(1), tr.policy.init(jax.random.PRNGKey(0), 16).lm)
    groups = make_groups(tr, [[1, 1, 0, 0], [1, 1, 1, 0]])  # k = 2, 3
    batch, stats = prepare(state.params, state.ref_lm, groups, jnp.ones(P, bool), state.key)
    np.testing.assert_array_equal(batch.sft_weight, [0.5, 0.25])
    np.testing.assert_array_equal(batch.rl_weight, [0.125] * G + [0.25] * G)


@pytest.fixture(scope="module")
def trainers_soft():
    tr = TR.build(tiny_config("hpt_soft"))
    return tr, jax.jit(tr.prepare)


@pytest.mark.parametrize(
    "variant,log_w,want",
    [
        ("paper_code", np.log(1.5), 1.5),
        ("paper_code", np.log(0.5), 0.5),
        ("verl_clip", np.log(1.5), 1.28),
        ("verl_clip", np.log(0.5), 0.8),
        ("summary_clip", np.log(1.5), 1.2),
        ("later_code", np.log(1.5), 1.5),
        ("later_code", np.log(50.0), 10.0),
        ("one", np.log(50.0), 1.0),
    ],
)
def test_flowrl_weight_variants(variant, log_w, want):
    cfg = losses.default_loss_config("flowrl", **losses.flowrl_weight_overrides(variant))
    logp = jnp.array([[log_w / 2, log_w / 2]], jnp.float32)
    inputs = LossInputs(
        logp, jnp.ones((1, 2)), jnp.zeros((1, 2)), old_logp=jnp.zeros((1, 2)),
        ref_logp=jnp.zeros((1, 2)), log_z=jnp.zeros(1),
    )  # fmt: skip
    _, m = losses.get_loss("flowrl")(inputs, cfg)
    assert float(m["is_weight"]) == pytest.approx(want, rel=1e-5)


def test_flowrl_weight_config_field():
    assert TR.make_setup(tiny_config("flowrl")).loss_cfg.is_weight == "unclipped"  # paper code
    cfg = TR.make_setup(tiny_config("flowrl", flowrl_weight="verl_clip")).loss_cfg
    assert (cfg.is_weight, cfg.clip_low, cfg.clip_high) == ("clip", 0.2, 0.28)
    with pytest.raises(harness.ConfigError, match="FlowRL only"):
        TR.validate_config(tiny_config("grpo", flowrl_weight="verl_clip"))
    with pytest.raises(harness.ConfigError, match="rl.flowrl_weight"):
        TR.validate_config(tiny_config("flowrl", flowrl_weight="nope"))


def test_value_loss_clipping_golden():
    v = jnp.array([[2.0, 0.0]])
    old = jnp.array([[1.0, 1.0]])
    ret = jnp.array([[3.0, -1.0]])
    m = jnp.ones((1, 2))
    # unclipped: 0.5 * mean((2-3)^2, (0+1)^2) = 0.5
    assert float(losses.value_loss(v, old, ret, m)) == pytest.approx(0.5)
    # clip 0.5: V_clip = (1.5, 0.5); max((1)^2, (1.5)^2) = 2.25, max(1, (1.5)^2) = 2.25 -> 1.125
    assert float(losses.value_loss(v, old, ret, m, 0.5)) == pytest.approx(1.125)


def test_ppo_critic_warmup_freezes_actor(ppo_learn):
    tr, prepare, learn = ppo_learn
    assert tr.spec.critic_warmup == 5 and tr.spec.value_clip == 0.5
    state = tr.init_from_lm(jax.random.PRNGKey(1), tr.policy.init(jax.random.PRNGKey(0), 16).lm)
    groups = make_groups(tr, [[1, 0, 0, 1], [0, 1, 1, 0]])
    batch, _ = prepare(state.params, state.ref_lm, groups, jnp.ones(P, bool), state.key)

    def moved(step):
        new, _ = learn(state.replace(step=jnp.int32(step)), batch)
        d = lambda a, b: max(
            float(jnp.max(jnp.abs(x - y)))
            for x, y in zip(  # noqa: E731
                jax.tree.leaves(a), jax.tree.leaves(b), strict=True
            )
        )
        return d(new.params.lm, state.params.lm), d(new.params.value, state.params.value)

    lm_warm, value_warm = moved(4)
    lm_on, value_on = moved(5)
    assert lm_warm == 0.0 and value_warm > 0.0
    assert lm_on > 0.0 and value_on > 0.0


@pytest.fixture(scope="module")
def ppo_learn():
    tr = TR.build(tiny_config("ppo"))
    return tr, jax.jit(tr.prepare), jax.jit(tr.learn)


@pytest.mark.parametrize("name", ["constant", "cosine", "linear"])
def test_lr_schedules_warm_up_then_follow_shape(name):
    sched = TR.LR_SCHEDULES.get(name)(1.0, 10, 100)
    lr = np.array([float(sched(i)) for i in range(101)])
    assert lr[0] == pytest.approx(0.1)  # lr / warmup at the first step
    assert np.all(np.diff(lr[:11]) > 0) and lr[10] == pytest.approx(1.0)
    tail = {"constant": 1.0, "cosine": 0.0, "linear": 0.0}[name]
    assert lr[100] == pytest.approx(tail, abs=1e-6)
    no_warmup = TR.LR_SCHEDULES.get(name)(1.0, 0, 100)
    assert float(no_warmup(0)) == pytest.approx(1.0)


def test_entropy_coef_field_overrides_algorithm():
    assert TR.make_setup(tiny_config("hpt")).spec.entropy_coef == 0.001
    assert TR.make_setup(tiny_config("hpt", entropy_coef=0.0)).spec.entropy_coef == 0.0
    assert TR.make_setup(tiny_config("grpo", entropy_coef=0.01)).spec.entropy_coef == 0.01


def test_ppo_objective_clips_value_around_rollout_values(ppo_learn):
    tr, prepare, _ = ppo_learn
    state = tr.init_from_lm(jax.random.PRNGKey(1), tr.policy.init(jax.random.PRNGKey(0), 16).lm)
    groups = make_groups(tr, [[1, 0, 0, 1], [0, 1, 1, 0]])
    batch, _ = prepare(state.params, state.ref_lm, groups, jnp.ones(P, bool), state.key)
    # Returns equal to the current values: the unclipped error is 0; rollout values 2 above
    # them put the clipped prediction at V + 1.5, so the value loss is 0.5 * 1.5^2 = 1.125.
    batch = batch._replace(returns=batch.old_values, old_values=batch.old_values + 2.0)
    _, m = jax.jit(tr.objective)(state.params, batch)
    assert float(m["loss/value"]) == pytest.approx(1.125, rel=1e-5)
