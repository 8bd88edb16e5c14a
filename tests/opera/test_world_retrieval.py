"""World invariants and retriever metrics against plain references."""

import jax.numpy as jnp
import numpy as np
import pytest

from opera import retrieval
from opera import rewards as rw
from opera.world import (
    EOS,
    FACT_LEN,
    MAX_HOPS,
    PLAN_LEN,
    WorldConfig,
    execute_plan_oracle,
    make_world,
)

CFG = WorldConfig(n_train_questions=128, n_test_questions=64)


@pytest.fixture(scope="module")
def world():
    return make_world(3, CFG)


@pytest.fixture(scope="module")
def bm25(world):
    return retrieval.make_bm25(world)


def test_world_is_deterministic(world):
    again = make_world(3, CFG)
    np.testing.assert_array_equal(world.docs, again.docs)
    np.testing.assert_array_equal(world.train.tokens, again.train.tokens)
    assert not np.array_equal(make_world(4, CFG).kb, world.kb)


def test_answers_reachable_through_gold_documents(world):
    v = world.vocab
    for qs in (world.train, world.test):
        for q in range(len(qs.hops)):
            k = int(qs.hops[q])
            assert 2 <= k <= MAX_HOPS
            for i in range(k):
                h, r, t = qs.chain[q, i], qs.rels[q, i], qs.chain[q, i + 1]
                assert world.kb[h, r] == t
                doc = world.docs[qs.gold_docs[q, i]].reshape(-1, FACT_LEN)
                fact = [*v.name(h), v.rel0 + r, *v.obj_name(t)]
                assert any(list(f) == fact for f in doc)
            assert qs.answer[q] == qs.chain[q, k]


def test_every_fact_in_exactly_one_document(world):
    v = world.vocab
    facts = world.docs.reshape(len(world.docs), -1, FACT_LEN).reshape(-1, FACT_LEN)
    rel_facts = facts[(facts[:, 2] >= v.rel0) & (facts[:, 2] < v.rel0 + v.n_relations)]
    assert len(rel_facts) == world.kb.size
    assert len({tuple(f) for f in rel_facts}) == world.kb.size


def test_heldout_entities_start_only_test_questions(world):
    assert world.heldout[world.test.chain[:, 0]].all()
    assert not world.heldout[world.train.chain[:, 0]].any()


def test_gold_plans_execute_to_gold_answers(world):
    qs = world.train
    oracle = [execute_plan_oracle(world, qs.plan[i], 0) for i in range(len(qs.hops))]
    np.testing.assert_array_equal(oracle, qs.answer)
    kb = rw.KB.of(world)
    jitted = rw.execute_plan_kb(world.vocab, kb, jnp.asarray(qs.plan))
    np.testing.assert_array_equal(np.asarray(jitted), qs.answer)


def test_jitted_plan_execution_matches_oracle_on_corrupted_plans(world):
    rng = np.random.default_rng(0)
    plans = world.train.plan.copy()
    flips = rng.random(plans.shape) < 0.15
    plans[flips] = rng.integers(0, world.vocab.size, size=flips.sum())
    plans[:, -1] = EOS
    got = np.asarray(rw.execute_plan_kb(world.vocab, rw.KB.of(world), jnp.asarray(plans)))
    want = [execute_plan_oracle(world, p, 0) for p in plans]
    np.testing.assert_array_equal(got, want)
    assert (got == -1).any() and (got >= 0).any()
    assert plans.shape[1] == PLAN_LEN


def test_bm25_table_matches_rank_bm25(world, bm25):
    rng = np.random.default_rng(1)
    queries = rng.integers(1, world.vocab.size, size=(20, 3))
    got = np.asarray(retrieval.scores(bm25, jnp.asarray(queries)))
    for q, s in zip(queries, got, strict=True):
        np.testing.assert_allclose(s, retrieval.bm25_scores_reference(world.docs, q), rtol=1e-5,
                                   atol=1e-5)  # fmt: skip


def test_ndcg_matches_brute_force(world, bm25):
    rng = np.random.default_rng(2)
    queries = jnp.asarray(rng.integers(1, world.vocab.size, size=(30, 3)))
    n_docs = len(world.docs)
    relevant = rng.random((30, n_docs)) < 0.05
    relevant[0] = False
    for k in (1, 3, 5):
        got = retrieval.ndcg_at_k(retrieval.top_k(bm25, queries, k), jnp.asarray(relevant))
        sc = np.asarray(retrieval.scores(bm25, queries))
        want = [retrieval.ndcg_reference(sc[i], relevant[i], k) for i in range(30)]
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    assert float(got[0]) == 0.0


def test_faiss_index_matches_brute_force_and_dense_learns(world):
    e_q, e_d = retrieval.train_dense(world, seed=0, steps=200)
    index = retrieval.faiss_index(e_d)
    rng = np.random.default_rng(3)
    q = e_q[rng.integers(1, world.vocab.size, size=(16, 3))].mean(1).astype(np.float32)
    _, found = index.search(q, 4)
    brute = np.argsort(-(q @ e_d.T), axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(found, brute)
    dense = retrieval.Retriever(jnp.asarray(e_q @ e_d.T), "dense")
    assert float(retrieval.question_ndcg(dense, world, 2, canonical_queries=True)) > 0.8


def test_alias_queries_retrieve_worse_than_canonical(world, bm25):
    canon = float(retrieval.question_ndcg(bm25, world, 2, canonical_queries=True))
    alias = float(retrieval.question_ndcg(bm25, world, 2, canonical_queries=False))
    assert canon > alias + 0.1
