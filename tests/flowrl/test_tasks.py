"""Tasks: verifiers accept exactly the correct answers (independent brute force), splits, demos."""

import itertools
import re
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowrl import tasks as T


@pytest.fixture(scope="module")
def arith():
    return T.make_arithmetic(n_operands=3, pool_size=2000)


@pytest.fixture(scope="module")
def countdown():
    return T.make_countdown(n_numbers=3, max_number=4)


def _py_left_to_right(nums, ops, modulus=None):
    """Independent reference: Python eval with explicit brackets, e.g. ((a+b)*c)."""
    expr = str(nums[0])
    for op, x in zip(ops, nums[1:], strict=True):
        expr = f"({expr}{op}{x})"
    value = eval(expr)  # noqa: S307 - digits and + - * only
    return value % modulus if modulus is not None else value


def _all_responses(alphabet, length):
    return np.array(list(itertools.product(alphabet, repeat=length)), dtype=np.int32)


def test_vocab_roundtrip():
    text = "<bos> A 3 + 4 * 5 ="
    assert T.decode(T.encode(text)) == text
    with pytest.raises(ValueError, match="unknown symbol"):
        T.encode("<bos> x")
    with pytest.raises(ValueError, match="registered"):
        T.make_task("sorting")


def test_arithmetic_prompts_answers_and_demos(arith):
    for split in (arith.train, arith.test):
        assert split.prompts.shape[1] == arith.prompt_len
        for i in range(0, len(split), 97):
            s = T.decode(split.prompts[i]).split()
            assert s[:2] == ["<bos>", "A"] and s[-1] == "="
            nums, ops = [int(x) for x in s[2:-1:2]], s[3:-1:2]
            truth = _py_left_to_right(nums, ops, modulus=10)
            assert split.answers[i] == truth
            demo = T.decode(split.demos[i, 0]).split()
            assert demo[-3:] == [">", str(truth), "<eos>"]
    # The demonstrations are accepted by the verifier.
    probs = arith.problems(arith.train, jnp.arange(len(arith.train)))
    assert float(jnp.mean(arith.score(jnp.asarray(arith.train.demos[:, 0]), probs))) == 1.0


def test_arithmetic_verifier_brute_force(arith):
    """Every response over a small alphabet: JAX verifier == regex on the decoded string."""
    alphabet = [T.DIGIT0, T.DIGIT0 + 3, T.DIGIT0 + 7, T.ANSWER, T.EOS, T.PLUS, T.PAD]
    resp = _all_responses(alphabet, arith.response_len)  # 7^5 = 16807
    for truth in (0, 3, 7):
        probs = T.Problems(answers=jnp.full(len(resp), truth), operands=jnp.zeros((len(resp), 3)))
        got = np.asarray(jax.jit(T.arithmetic_score)(jnp.asarray(resp), probs))
        ext = np.asarray(jax.jit(T.arithmetic_extract)(jnp.asarray(resp)))
        for r, g, e in zip(resp, got, ext, strict=True):
            symbols = [T.VOCAB[t] for t in r]
            if "<eos>" not in symbols:
                ref, ref_ext = 0.0, -1
            else:
                s = "".join("_" if x == "<pad>" else x for x in symbols[: symbols.index("<eos>")])
                m = re.fullmatch(r".*>(\d)", s)
                ref_ext = int(m.group(1)) if m else -1
                ref = float(m is not None and int(m.group(1)) == truth)
            assert g == ref and e == ref_ext, (T.decode(r), g, ref, e, ref_ext)
    assert got.sum() > 0  # the check covers accepted responses too


def test_countdown_verifier_brute_force(countdown):
    """All responses over the prompt's symbols: JAX verifier == Python eval + multiset check,
    and the number of accepted responses == the stored number of solutions."""
    rng = np.random.default_rng(0)
    split = countdown.test
    ops = [T.PLUS, T.MINUS, T.TIMES]
    checked = 0
    for i in rng.choice(len(split), size=4, replace=False):
        nums = [int(x) for x in split.operands[i]]
        target = int(split.answers[i])
        # Prompt's numbers, one digit not in the prompt, ops, <eos>: 6 symbols over 6 positions.
        other = next(d for d in range(1, 10) if d not in nums)
        alphabet = sorted({T.DIGIT0 + x for x in nums}) + [T.DIGIT0 + other, *ops, T.EOS]
        resp = _all_responses(alphabet, countdown.response_len)
        probs = countdown.problems(split, jnp.full(len(resp), i))
        got = np.asarray(jax.jit(T.countdown_score)(jnp.asarray(resp), probs))
        ids = np.asarray(jax.jit(T.countdown_extract)(jnp.asarray(resp), probs))
        ref = np.zeros(len(resp))
        for j, r in enumerate(resp):
            s = [T.VOCAB[t] for t in r]
            if s[-1] != "<eos>" or any(not x.isdigit() for x in s[0:-1:2]):
                continue
            if any(x not in "+-*" for x in s[1:-1:2]):
                continue
            ns, os_ = [int(x) for x in s[0:-1:2]], s[1:-1:2]
            if Counter(ns) != Counter(nums):
                continue
            ref[j] = float(_py_left_to_right(ns, os_) == target)
        np.testing.assert_array_equal(got, ref)
        assert ref.sum() == split.num_solutions[i] >= 1
        # Correct responses have distinct ids; malformed ones get -1.
        assert len(set(ids[got == 1].tolist())) == int(ref.sum())
        assert np.all(ids[ref == 0][~np.isin(ids[ref == 0], ids[ref == 1])] >= -1)
        checked += 1
    assert checked == 4


def test_countdown_demos_are_distinct_solutions(countdown):
    split = countdown.train
    n = len(split)
    for d in range(split.demos.shape[1]):
        valid = d < split.num_demos
        probs = countdown.problems(split, jnp.arange(n))
        s = np.asarray(countdown.score(jnp.asarray(split.demos[:, d]), probs))
        assert np.all(s[valid] == 1.0)
    ids = np.stack(
        [
            np.asarray(countdown.extract(jnp.asarray(split.demos[:, d]), probs))
            for d in range(split.demos.shape[1])
        ],
        1,
    )
    for i in range(n):
        k = split.num_demos[i]
        assert len(set(ids[i, :k].tolist())) == k == min(split.num_solutions[i], 8)


@pytest.mark.parametrize("name", ["arithmetic", "countdown"])
def test_split_disjoint_and_fixed(name, arith, countdown):
    task = {"arithmetic": arith, "countdown": countdown}[name]
    train = {tuple(p) for p in task.train.prompts.tolist()}
    test = {tuple(p) for p in task.test.prompts.tolist()}
    assert train and test and not train & test
    if name == "countdown":  # no (multiset, target) pair appears in both splits

        def keys(split):
            return {
                (tuple(sorted(o)), a)
                for o, a in zip(split.operands.tolist(), split.answers.tolist(), strict=True)
            }

        assert not keys(task.train) & keys(task.test)
    kwargs = {"arithmetic": {"n_operands": 3, "pool_size": 2000}}.get(
        name, {"n_numbers": 3, "max_number": 4}
    )
    again = T.make_task(name, **kwargs)
    np.testing.assert_array_equal(again.test.prompts, task.test.prompts)


def test_response_mask_and_demo_sampling(countdown):
    r = jnp.array([[5, T.EOS, 7, 7], [5, 6, 7, 8], [T.EOS, 1, 1, 1]])
    np.testing.assert_array_equal(T.response_mask(r), [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    idx = jnp.zeros(64, jnp.int32) + int(np.argmax(countdown.train.num_demos))
    demos = T.sample_demos(countdown.train, idx, jax.random.PRNGKey(0))
    assert len({tuple(d) for d in np.asarray(demos).tolist()}) > 1
