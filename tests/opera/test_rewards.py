"""Role rewards on hand cases, EM/F1 against the plain reference, gold injection's zero gradient."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl.losses import default_loss_config
from opera import mapgrpo, retrieval
from opera import rewards as rw
from opera.world import EOS, NIL, NO, PAD, PH0, PLAN_LEN, YES, WorldConfig, make_world

CFG = WorldConfig(n_train_questions=64, n_test_questions=16)


@pytest.fixture(scope="module")
def world():
    return make_world(5, CFG)


def _two_hop(world):
    q = int(np.flatnonzero(world.train.hops == 2)[0])
    return q, world.train


def test_gold_plan_scores_one_and_empty_plan_zero(world):
    q, qs = _two_hop(world)
    kb = rw.KB.of(world)
    gold = jnp.asarray(qs.plan[q : q + 1])
    ans = jnp.asarray(qs.answer[q : q + 1])
    assert float(rw.plan_reward(world.vocab, kb, gold, gold, ans)[0]) == pytest.approx(1.0)
    empty = jnp.full((1, PLAN_LEN), PAD).at[0, 0].set(EOS)
    assert float(rw.plan_reward(world.vocab, kb, empty, gold, ans)[0]) == pytest.approx(0.0)


def test_plan_with_a_wrong_relation(world):
    """2-hop plan whose second relation is wrong (answer changes): accuracy 1/2, coherence 1,
    executability 0, dependency 1, efficiency 1 -> 0.30/2 + 0.25 + 0.10 + 0.10 = 0.60."""
    q, qs = _two_hop(world)
    v, kb = world.vocab, rw.KB.of(world)
    r2 = int(qs.rels[q, 1])
    mid = int(qs.chain[q, 1])
    other = next(r for r in range(v.n_relations) if world.kb[mid, r] != qs.answer[q])
    assert other != r2
    plan = qs.plan[q].copy()
    plan[3] = v.rel0 + other
    comps = rw.plan_components(v, kb, jnp.asarray(plan[None]), jnp.asarray(qs.plan[q : q + 1]),
                               jnp.asarray(qs.answer[q : q + 1]))  # fmt: skip
    assert {k: float(c[0]) for k, c in comps.items()} == pytest.approx(
        {"accuracy": 0.5, "coherence": 1.0, "executability": 0.0, "dependency": 1.0,
         "efficiency": 1.0})  # fmt: skip
    r = rw.plan_reward(v, kb, jnp.asarray(plan[None]), jnp.asarray(qs.plan[q : q + 1]),
                       jnp.asarray(qs.answer[q : q + 1]))  # fmt: skip
    assert float(r[0]) == pytest.approx(0.60)


def test_plan_with_an_extra_step_and_forward_reference(world):
    q, qs = _two_hop(world)
    v, kb = world.vocab, rw.KB.of(world)
    plan = qs.plan[q].copy()
    plan[6:9] = [v.rel0, PH0 + 1, NIL]  # step 3 depends on step 2: fine
    plan[9] = EOS
    comps = rw.plan_components(v, kb, jnp.asarray(plan[None]), jnp.asarray(qs.plan[q : q + 1]),
                               jnp.asarray(qs.answer[q : q + 1]))  # fmt: skip
    assert float(comps["accuracy"][0]) == pytest.approx(2 / 3)
    assert float(comps["efficiency"][0]) == pytest.approx(0.5)
    assert float(comps["dependency"][0]) == 0.0
    plan[7] = PH0 + 2  # a step pointing at itself: malformed, plan stops after step 2
    comps = rw.plan_components(v, kb, jnp.asarray(plan[None]), jnp.asarray(qs.plan[q : q + 1]),
                               jnp.asarray(qs.answer[q : q + 1]))  # fmt: skip
    assert float(comps["coherence"][0]) == pytest.approx(0.25)
    assert float(comps["executability"][0]) == 1.0


def _query(world, e, r, alias=False):
    v = world.vocab
    return jnp.asarray([[(v.alias0 if alias else v.rel0) + r, *v.name(e)]], jnp.int32)


def test_analysis_reward_hand_cases(world):
    v, kb = world.vocab, rw.KB.of(world)
    e, r = 0, 1
    doc, obj = int(world.doc_of_fact[e, r]), int(world.kb[e, r])
    q = _query(world, e, r, alias=True)
    with_doc = jnp.asarray([[doc, (doc + 1) % len(world.docs)]])
    without = jnp.asarray([[(doc + 1) % len(world.docs), (doc + 2) % len(world.docs)]])
    yes = jnp.asarray([[YES, *v.name(obj)]])
    no = jnp.asarray([[NO, NIL, NIL]])
    wrong = jnp.asarray([[YES, *v.name((obj + 1) % world.kb.shape[0])]])
    cases = [(with_doc, yes, 1.0), (without, no, 1.0), (with_doc, no, 0.10),
             (with_doc, wrong, 0.35), (without, yes, 0.10), (with_doc, jnp.asarray([[NIL, YES, 3]]), 0.0)]  # fmt: skip
    for docs, out, want in cases:
        got = float(rw.analysis_reward(v, kb, q, docs, out)[0])
        assert got == pytest.approx(want), (out, want)


def test_rewrite_reward_hand_cases(world):
    v, kb = world.vocab, rw.KB.of(world)
    bm25 = retrieval.make_bm25(world)
    e = next(e for e in range(world.kb.shape[0])
             if int(retrieval.top_k(bm25, _query(world, e, 0), 1)[0, 0]) == world.doc_of_fact[e, 0])  # fmt: skip
    alias = _query(world, e, 0, alias=True)
    canon = _query(world, e, 0)
    got = rw.rewrite_reward(v, kb, bm25, alias, canon, 2, 0.9, 0.1)
    assert float(got[0]) == pytest.approx(1.0)
    junk = jnp.asarray([[YES, YES, YES]])
    assert float(rw.rewrite_reward(v, kb, bm25, alias, junk, 2, 0.9, 0.1)[0]) == pytest.approx(0.0)


def test_em_f1_match_reference():
    rng = np.random.default_rng(0)
    gold = np.stack([rng.integers(30, 33, 200), rng.integers(40, 43, 200)], 1)
    pred = np.where(rng.random((200, 2)) < 0.6, gold, rng.integers(30, 43, (200, 2)))
    pred[:10, 1] = NIL
    pred[10:20] = pred[10:20, ::-1]
    em, f1 = rw.answer_em_f1(jnp.asarray(pred), jnp.asarray(gold))
    ref = np.array([rw.answer_em_f1_reference(p, g) for p, g in zip(pred, gold, strict=True)])
    np.testing.assert_allclose(np.asarray(em), ref[:, 0])
    np.testing.assert_allclose(np.asarray(f1), ref[:, 1], atol=1e-6)


def _rl(**kw):
    return mapgrpo.RLConfig("grpo", default_loss_config("grpo", kl_coef=0.01), 2, 4, 1.0, 1,
                            True, 0.9, 0.1)._replace(**kw)  # fmt: skip


def test_gold_injection_gets_zero_gradient_but_shapes_the_advantage():
    rng = np.random.default_rng(0)
    b, t = 8, 5
    logp = jnp.asarray(rng.normal(size=(b, t)) - 2.0, jnp.float32)
    ref = logp + 0.1
    mask = jnp.ones((b, t))
    scores = jnp.asarray(rng.random(b), jnp.float32)
    gid = jnp.arange(b) // 4
    samples = jnp.asarray(rng.integers(0, 9, (b, t)))
    gold = jnp.full((b, t), 7)
    worst = np.asarray(jnp.argmin(scores.reshape(2, 4), axis=1)) + np.array([0, 4])
    samples, scores, injected = mapgrpo.inject_gold(scores, samples, gold, jnp.ones(b), 4, True)
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(injected)), worst)
    assert float(scores[injected].min()) == 1.0
    assert bool(jnp.all(samples[injected] == 7))

    def loss(lp, sc):
        return mapgrpo.group_policy_loss(lp, jax.lax.stop_gradient(lp), ref, mask, sc, gid,
                                         injected, _rl())[0]  # fmt: skip

    g = jax.grad(loss)(logp, scores)
    assert bool(jnp.all(g[injected] == 0.0))
    assert bool(jnp.all(jnp.abs(g[~injected]).sum(-1) > 0))
    g2 = jax.grad(loss)(logp, scores.at[jnp.argmax(injected)].set(0.0))
    assert not np.allclose(np.asarray(g2[~injected]), np.asarray(g[~injected]))
    _, _, off = mapgrpo.inject_gold(scores, samples, gold, jnp.ones(b), 4, False)
    assert not bool(off.any())
