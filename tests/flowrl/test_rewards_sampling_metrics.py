"""Rewards (exact match, TTRL vote, overlong), dynamic sampling with refill, pass@k and maj@k."""

import collections
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl import metrics, rewards, sampling

# --------------------------------------------------------------------------- rewards


def test_exact_match():
    target = jnp.array([[3, 4, 0], [3, 4, 0], [3, 4, 0], [7, 0, 0]])
    tmask = jnp.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [1, 0, 0]])
    pred = jnp.array([[3, 4, 9], [3, 4, 5], [3, 5, 0], [7, 0, 0]])
    pmask = jnp.array([[1, 1, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]])
    # row 0: equal (junk after the span ignored); row 1: longer; row 2: wrong token; row 3: equal
    r = rewards.exact_match_reward(pred, target, pmask, tmask, correct=1.0, wrong=-1.0)
    np.testing.assert_array_equal(r, [1.0, -1.0, -1.0, 1.0])


def test_majority_vote_and_ttrl_reward():
    answers = jnp.array([[5, 2, 5, 2, 9, 5], [1, 2, 2, 1, 3, 3], [4, 4, 8, 8, 8, 8]])
    valid = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 1]], bool)
    label, votes, agree = jax.jit(rewards.majority_vote)(answers, valid)
    # row 0: 5 has 3 votes; row 1: three-way tie 1/2/3 -> first seen (1);
    # row 2: valid answers are 4, 4, 8 -> 4 with 2 votes
    np.testing.assert_array_equal(label, [5, 1, 4])
    np.testing.assert_array_equal(votes, [3, 2, 2])
    np.testing.assert_allclose(agree, [3 / 6, 2 / 6, 2 / 6])
    truth = jnp.array([5, 2, 8])
    ttrl = jax.jit(rewards.majority_vote_reward, static_argnames="num_train")
    r, m = ttrl(answers, valid, truth, num_train=4)
    np.testing.assert_array_equal(r, [[1, 0, 1, 0], [1, 0, 0, 1], [1, 1, 0, 0]])
    assert m["majority_ratio"] == pytest.approx(7 / 18)
    assert m["label_accuracy"] == pytest.approx(1 / 3)  # only row 0's label is right
    # true rewards on the first 4: row0 (1,0,1,0) = pseudo; row1 (0,1,1,0) vs (1,0,0,1): 0 agree;
    # row2 (0,0,0,0) (answer 8 invalid there) vs (1,1,0,0): 2 agree -> (4 + 0 + 2) / 12
    assert m["reward_accuracy"] == pytest.approx(0.5)
    none_valid = jnp.zeros((1, 3), bool)
    label, votes, _ = rewards.majority_vote(jnp.array([[1, 1, 2]]), none_valid)
    assert int(label[0]) == -1 and float(votes[0]) == 0.0


def test_overlong_penalty():
    # L_max 20, L_buf 4: free up to 16, then -(|y| - 16) / 4
    r = rewards.overlong_penalty(jnp.array([10, 16, 18, 20]), max_len=20, buffer_len=4)
    np.testing.assert_allclose(r, [0.0, 0.0, -0.5, -1.0])
    with pytest.raises(ValueError, match="buffer_len=0"):
        rewards.overlong_penalty(jnp.array([1]), max_len=20, buffer_len=0)


# --------------------------------------------------------------------------- dynamic sampling

P, G = 4, 3


def generate(key):
    """A generation batch: P groups with ids and Bernoulli(p) rewards, p = (0, 0.3, 0.6, 1)."""
    k1, k2 = jax.random.split(key)
    ids = jax.random.randint(k1, (P,), 0, 1000)
    p = jnp.array([0.0, 0.3, 0.6, 1.0])[:, None]
    scores = (jax.random.uniform(k2, (P, G)) < p).astype(jnp.float32)
    return {"ids": ids, "p": jnp.broadcast_to(p, (P, G))}, scores


def python_refill(key, target, max_batches):
    """Host reference: the same key sequence, concatenate the kept groups, truncate."""
    kept_ids, kept_scores, rounds = [], [], 0
    gen = jax.jit(generate)
    while len(kept_ids) < target and rounds < max_batches:
        key, key_gen = jax.random.split(key)
        batch, scores = gen(key_gen)
        for i in range(P):
            s = np.asarray(scores[i])
            if s.max() > s.min():
                kept_ids.append(int(batch["ids"][i]))
                kept_scores.append(s)
        rounds += 1
    return kept_ids[:target], kept_scores[:target], rounds


def test_group_keep_mask():
    scores = jnp.array([[0, 0, 0], [1, 1, 1], [0, 1, 0], [1, 1, 0]], jnp.float32)
    np.testing.assert_array_equal(sampling.group_keep_mask(scores), [False, False, True, True])
    np.testing.assert_array_equal(
        sampling.group_keep_mask(scores, 0.1, 0.5), [False, False, True, False]
    )


@pytest.mark.parametrize("target, max_batches", [(5, 10), (30, 3)])
def test_dynamic_sample_matches_host_loop(target, max_batches):
    key = jax.random.PRNGKey(11)
    run = jax.jit(sampling.dynamic_sample, static_argnums=(0, 2, 3))
    out = run(generate, key, target, max_batches)
    ids, scores, rounds = python_refill(key, target, max_batches)
    n = len(ids)
    assert int(out.num_batches) == rounds
    np.testing.assert_array_equal(out.valid, np.arange(target) < n)
    np.testing.assert_array_equal(out.batch["ids"][:n], ids)
    np.testing.assert_array_equal(out.scores[:n], np.stack(scores))
    # every kept group has mixed rewards (never the p = 0 or p = 1 prompts)
    assert np.all((np.asarray(out.batch["p"][:n, 0]) > 0) & (np.asarray(out.batch["p"][:n, 0]) < 1))
    if target == 30:  # 3 batches of at most 2 qualified groups cannot fill 30 slots
        assert n < target and int(out.num_qualified) == n


# --------------------------------------------------------------------------- pass@k, maj@k


def brute_pass_at_k(n, c, k):
    correct = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration():
    n = 7
    c = jnp.arange(n + 1)
    for k in range(1, n + 1):
        got = metrics.pass_at_k(n, c, k)
        want = [brute_pass_at_k(n, int(ci), k) for ci in c]
        np.testing.assert_allclose(got, want, atol=1e-6)
    # closed form at n = 64, c = 3, k = 8: 1 - C(61, 8) / C(64, 8)
    want = 1 - math.comb(61, 8) / math.comb(64, 8)
    assert metrics.pass_at_k(64, jnp.array(3), 8) == pytest.approx(want, rel=1e-5)
    correct = jnp.array([[1, 0, 0, 1], [0, 0, 0, 0]], bool)
    np.testing.assert_allclose(metrics.pass_at_k_from_correct(correct, 2), [5 / 6, 0.0])
    with pytest.raises(ValueError, match="k=9"):
        metrics.pass_at_k(8, c, 9)


def brute_maj_at_k(answers, truth, k):
    hits = []
    for s in itertools.combinations(range(len(answers)), k):
        label = collections.Counter([answers[i] for i in s]).most_common(1)[0][0]
        hits.append(label == truth)
    return np.mean(hits)


def test_maj_at_k_matches_enumeration():
    answers = np.array([[1, 2, 1, 3, 2, 1, 2], [4, 4, 5, 5, 6, 4, 5], [0, 0, 0, 1, 1, 1, 1]])
    truth = np.array([1, 5, 1])
    for k in (1, 4, 7):  # k = 4: even k, so ties inside subsets occur
        got = metrics.maj_at_k(jnp.asarray(answers), jnp.asarray(truth), k)
        want = [brute_maj_at_k(list(a), t, k) for a, t in zip(answers, truth, strict=True)]
        np.testing.assert_allclose(got, want, atol=1e-6)
    mc = metrics.maj_at_k(
        jnp.asarray(answers), jnp.asarray(truth), 3, key=jax.random.PRNGKey(0), num_draws=2000
    )
    exact = [brute_maj_at_k(list(a), t, 3) for a, t in zip(answers, truth, strict=True)]
    np.testing.assert_allclose(mc, exact, atol=0.05)  # 2000 draws: std <= 0.011
    with pytest.raises(ValueError, match="max_subsets"):
        metrics.maj_at_k(jnp.zeros((1, 40), jnp.int32), jnp.zeros(1, jnp.int32), 20)
