"""Trainer: one RL step improves the objective and moves probability toward rewarded responses
(GRPO, PPO, FlowRL, HPT), TTRL pseudo-labels, HPT's per-prompt switch, metrics, the smoke run."""

import json
import os
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import harness
from experiments.configs import flowrl as flowrl_configs
from flowrl import tasks as T
from flowrl import trainer as TR
from flowrl import upge
from flowrl.types import LossConfig, LossInputs

P, G = 2, 4


def tiny_config(algo="grpo", **rl):
    c = flowrl_configs.get_config("smoke")
    c.model.d_model = 16
    c.model.d_state = 4
    c.sft.steps = 0
    c.rl.algo = algo
    c.rl.prompts_per_step = P
    c.rl.group_size = G
    c.rl.num_minibatches = 1
    c.rl.lr = 3e-4
    # FlowRL at the paper's beta = 15: the rewarded residual delta = log Z - beta r_hat is then
    # negative for any moderate log Z of the (random) head, so the update raises it. With beta = 1
    # and an uncalibrated log Z every residual is positive and FlowRL first lowers the whole group
    # (measured: the rewarded answer fell like the others), which is its log Z fitting, not a bug.
    c.rl.loss = {"beta": 15.0}
    for k, v in rl.items():
        c.rl[k] = v
    return c


def make_groups(tr, rewards_per_prompt):
    """Groups of demonstration responses: correct ones, or the demo with a wrong final digit."""
    task = tr.task
    demos = np.asarray(task.train.demos[:P, 0])  # [P, R]
    resp = np.repeat(demos[:, None], G, axis=1)
    for p, pattern in enumerate(rewards_per_prompt):
        for g, ok in enumerate(pattern):
            if not ok:
                e = int(np.argmax(resp[p, g] == T.EOS))
                resp[p, g, e - 1] = T.DIGIT0 + (task.train.answers[p] + 1 + g) % 10
    return tr.score(jnp.arange(P), jnp.asarray(resp, jnp.int32))


@pytest.fixture(scope="module")
def trainers():
    out = {}
    for algo in ("grpo", "ppo", "flowrl", "hpt"):
        config = tiny_config(algo)
        tr = TR.build(config)
        out[algo] = (tr, jax.jit(tr.prepare), jax.jit(tr.learn), jax.jit(tr.objective))
    return out


def answer_logp_fn(trainer, batch):
    """params -> f32[B]: log-prob of each response's answer digit (the token before <eos>), the
    only token on which rewarded and unrewarded responses of a group differ."""
    resp = np.asarray(batch.tokens[:, trainer.task.prompt_len :])
    pos = jnp.asarray(np.argmax(resp == T.EOS, axis=-1) - 1)
    rows = jnp.arange(len(pos))

    def fn(params):
        fw = trainer.policy.forward(params, batch.tokens, trainer.task.prompt_len, 1.0)
        return fw.logp[rows, pos]

    return fn


@pytest.mark.parametrize("algo", ["grpo", "ppo", "flowrl", "hpt"])
def test_one_rl_step_improves_objective_and_rewarded_logp(trainers, algo):
    tr, prepare, learn, objective = trainers[algo]
    state = tr.init_from_lm(jax.random.PRNGKey(1), tr.policy.init(jax.random.PRNGKey(0), 16).lm)
    groups = make_groups(tr, [[1, 0, 0, 1], [0, 1, 1, 0]])
    np.testing.assert_array_equal(groups.rewards, [[1, 0, 0, 1], [0, 1, 1, 0]])
    batch, stats = prepare(state.params, state.ref_lm, groups, jnp.ones(P, bool), state.key)
    assert float(stats["train/kl_ref"]) == pytest.approx(0.0, abs=1e-6)  # ref == policy
    before, _ = objective(state.params, batch)
    new_state, m = learn(state, batch)
    after, _ = objective(new_state.params, batch)
    assert np.isfinite(float(m["loss/total"]))
    assert float(after) < float(before)
    # The update direction (-grad L) moves probability toward the rewarded answers: the
    # directional derivative of each answer's log-prob along -grad L is larger for every
    # rewarded answer than for every unrewarded one of its group (first order, exact; Adam's
    # sign-like first step above mixes in cross-talk between the shared-prefix sequences).
    # FlowRL's log Z may shift a whole group, so only the order within groups is asserted.
    grads = jax.jit(jax.grad(lambda p: objective(p, batch)[0]))(state.params)
    direction = jax.tree.map(jnp.negative, grads)
    answer_logp = answer_logp_fn(tr, batch)
    _, gain = jax.jit(lambda p, d: jax.jvp(answer_logp, (p,), (d,)))(state.params, direction)
    gain = np.asarray(gain).reshape(P, G)
    rewarded = np.asarray(groups.rewards) > 0
    for p in range(P):
        assert gain[p][rewarded[p]].min() > gain[p][~rewarded[p]].max()
    assert gain[rewarded].mean() > 0


def test_hpt_switches_per_prompt_by_gate_and_matches_upge(trainers):
    tr, prepare, _, objective = trainers["hpt"]
    state = tr.init_from_lm(jax.random.PRNGKey(1), tr.policy.init(jax.random.PRNGKey(0), 16).lm)
    groups = make_groups(tr, [[0, 0, 0, 0], [0, 1, 1, 0]])  # k = 0 and k = 2
    batch, stats = prepare(state.params, state.ref_lm, groups, jnp.ones(P, bool), state.key)
    # Gate 0: prompt 0 (no correct rollout) -> SFT on its demonstration; prompt 1 -> RL.
    np.testing.assert_array_equal(batch.sft_weight, [1.0, 0.0])
    np.testing.assert_array_equal(batch.rl_weight, [0.0] * G + [1.0] * G)
    assert float(stats["train/sft_fraction"]) == 0.5
    # The demonstration rows are the prompts' demonstrations.
    np.testing.assert_array_equal(
        batch.demo_tokens[:, tr.task.prompt_len :], tr.task.train.demos[:P, 0]
    )
    # The generic objective equals the UPGE HPT mixed loss (released settings) in value and grad.
    hpt_cfg = upge.HPTConfig(gate=0, sft_coef=1.0, max_len=None)
    Lp = tr.task.prompt_len

    def reference(params):
        fw = tr.policy.forward(params, batch.tokens, Lp, 1.0)
        fd = tr.policy.forward(params, batch.demo_tokens, Lp, 1.0)
        rl = LossInputs(fw.logp, batch.mask, batch.advantages, old_logp=batch.old_logp)
        sft = LossInputs(fd.logp, batch.demo_mask, jnp.zeros_like(fd.logp))
        loss, _ = upge.hpt_mixed_loss(
            rl,
            sft,
            jnp.repeat(jnp.arange(P), G),
            jnp.arange(P),
            jnp.sum(groups.rewards > 0, -1),
            hpt_cfg,
            LossConfig(),
        )
        return loss - 0.001 * jnp.sum(fw.entropy * batch.mask * batch.rl_weight[:, None]) / (
            jnp.sum(batch.mask * batch.rl_weight[:, None])
        )

    ours, g_ours = jax.jit(jax.value_and_grad(lambda p: objective(p, batch)[0]))(state.params)
    ref, g_ref = jax.jit(jax.value_and_grad(reference))(state.params)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(g_ours.lm), jax.tree.leaves(g_ref.lm), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # A gate of 2 switches prompt 1 (k = 2 <= 2) to SFT as well.
    alpha, beta = upge.hpt_switch(jnp.array([0, 2, 3]), 2)
    np.testing.assert_array_equal(alpha, [0, 0, 1])
    np.testing.assert_array_equal(beta, [1, 1, 0])


def test_ttrl_pseudo_labels_equal_majority_answer():
    rng = np.random.default_rng(0)
    answers = rng.integers(-1, 4, size=(50, 9)).astype(np.int32)  # -1 = no answer extracted
    truth = rng.integers(0, 4, size=50).astype(np.int32)
    scores = (answers == truth[:, None]).astype(np.float32)
    r, diag = TR.majority_vote_reward(jnp.asarray(answers), jnp.asarray(scores), truth, 6)
    r = np.asarray(r)
    assert r.shape == (50, 6)
    for i in range(50):
        votes = Counter(a for a in answers[i].tolist() if a >= 0)
        if not votes:
            assert r[i].sum() == 0
            continue
        top = max(votes.values())
        label = next(a for a in answers[i].tolist() if a >= 0 and votes[a] == top)  # first seen
        np.testing.assert_array_equal(r[i], (answers[i, :6] == label).astype(np.float32))
        assert diag["label_accuracy"][i] == float(label == truth[i])
        assert diag["majority_ratio"][i] == pytest.approx(top / 9)


def test_distinct_correct_brute_force():
    rng = np.random.default_rng(1)
    answers = rng.integers(0, 5, size=(40, 7)).astype(np.int32)
    correct = rng.random((40, 7)) < 0.5
    got = np.asarray(TR.distinct_correct(jnp.asarray(answers), jnp.asarray(correct)))
    ref = [len(set(a[c].tolist())) for a, c in zip(answers, correct, strict=True)]
    np.testing.assert_array_equal(got, ref)


def test_config_errors():
    c = tiny_config("grpo")
    c.rl.algo = "ppo2"
    with pytest.raises(harness.ConfigError, match="ppo2.*'flowrl'"):
        TR.validate_config(c)
    c = tiny_config("hpt", reward="majority_vote")
    with pytest.raises(harness.ConfigError, match="TTRL"):
        TR.validate_config(c)
    c = tiny_config("grpo", num_minibatches=3)
    with pytest.raises(harness.ConfigError, match="divisible"):
        TR.validate_config(c)
    with pytest.raises(ValueError, match="registered"):
        TR.get_algorithm("nope")


def test_smoke_preset_end_to_end(tmp_path):
    config = flowrl_configs.get_config("smoke")
    config.eval.extra_temperatures = (0.0,)
    summary = TR.train_and_evaluate(config, str(tmp_path))
    final = summary["final_metrics"]
    for k in ("eval/pass@1", "eval/pass@4", "eval/maj@4", "eval/distinct_correct",
              "eval/pass@1_greedy"):  # fmt: skip
        assert 0.0 <= final[k] <= 4.0 and np.isfinite(final[k])
    for k in ("train/entropy", "train/kl_ref", "train/response_len", "perf/tokens_per_s"):
        assert np.isfinite(final[k])
    lines = open(os.path.join(tmp_path, "metrics.jsonl")).read().splitlines()
    assert len(lines) == config.rl.num_updates
    start = json.load(open(os.path.join(tmp_path, "start_eval.json")))
    assert "eval/pass@1" in start
    # Rollout inspection: log_prompts x num_samples rows per evaluation (steps 2 and 3).
    rows = [json.loads(x) for x in open(os.path.join(tmp_path, "rollouts.jsonl"))]
    per_eval = config.eval.log_prompts * config.eval.num_samples
    assert sorted(Counter(r["step"] for r in rows).items()) == [(2, per_eval), (3, per_eval)]
    assert all(r["prompt"].startswith("<bos>") and r["reward"] in (0.0, 1.0) for r in rows)
    assert os.listdir(os.path.join(tmp_path, "tb_rollouts"))


@pytest.mark.slow
def test_make_train_is_pure_and_dynamic_sampling_runs():
    config = tiny_config("dapo", num_updates=2)
    config.sft.steps = 5
    train = jax.jit(TR.make_train(config))
    s1, m1 = train(jax.random.PRNGKey(0))
    s2, m2 = train(jax.random.PRNGKey(0))
    assert m1["train/gen_batches"].shape == (2,)
    for a, b in zip(jax.tree.leaves(s1.params), jax.tree.leaves(s2.params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_split_minibatches_keeps_each_group_with_its_demonstration():
    """Every field of the Batch is split by whole prompt groups, and per-sequence rows stay with
    the demonstration row of the same prompt (split_minibatches alone, no model)."""
    Pn, Gt, M, R = 4, 3, 2, 5
    s = TR.Setup(*([None] * len(TR.Setup._fields)))._replace(P=Pn, Gt=Gt, M=M)
    group_of_row = jnp.repeat(jnp.arange(Pn), Gt).astype(jnp.float32)  # [P Gt]
    seq2 = jnp.broadcast_to(group_of_row[:, None], (Pn * Gt, R))
    per_prompt = jnp.arange(Pn).astype(jnp.float32)
    batch = TR.Batch(
        tokens=seq2,
        mask=seq2 + 10,
        advantages=seq2 + 20,
        returns=seq2 + 30,
        old_logp=seq2 + 40,
        ref_logp=seq2 + 50,
        old_values=seq2 + 90,
        rl_weight=group_of_row + 60,
        actor_weight=group_of_row + 100,
        demo_tokens=jnp.broadcast_to(per_prompt[:, None], (Pn, R)),
        demo_mask=jnp.broadcast_to(per_prompt[:, None], (Pn, R)) + 70,
        sft_weight=per_prompt + 80,
    )
    out = TR.split_minibatches(s, batch, jax.random.PRNGKey(3))
    offsets = dict(
        zip(TR.Batch._fields, (0, 10, 20, 30, 40, 50, 90, 60, 100, 0, 70, 80), strict=True)
    )
    groups = np.asarray(out.sft_weight) - 80  # [M, P / M] prompt of each demonstration row
    assert sorted(groups.ravel().tolist()) == list(range(Pn))
    for name in TR.Batch._fields:
        x = np.asarray(getattr(out, name)) - offsets[name]
        rows = Gt if name in ("tokens", "mask", "advantages", "returns", "old_logp",
                              "ref_logp", "old_values", "rl_weight",
                              "actor_weight") else 1  # fmt: skip
        assert x.shape[:2] == (M, (Pn // M) * rows), name
        expect = np.repeat(groups, rows, axis=1)
        x = x.reshape(M, (Pn // M) * rows, -1)[..., 0]
        np.testing.assert_array_equal(x, expect, err_msg=name)
