"""Synthetic task generators: labels checked by independent brute-force solvers; determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ssm import tasks

KEY = jax.random.PRNGKey(0)


def _np(batch):
    return tuple(np.asarray(x) for x in batch)


# ------------------------------------------------------------------ brute-force solvers


def solve_selective_copying(x, vocab):
    """Answer: the non-noise, non-marker tokens in order, emitted at the marker positions."""
    data = [t for t in x if t not in (0, vocab - 1)]
    markers = [i for i, t in enumerate(x) if t == vocab - 1]
    return dict(zip(markers, data, strict=True))


def solve_induction(x, vocab):
    trig = [i for i, t in enumerate(x) if t == vocab - 1]
    assert len(trig) == 2 and trig[1] == len(x) - 1  # exactly one earlier trigger
    return {len(x) - 1: x[trig[0] + 1]}


def solve_mqar(x, vocab, k):
    table = {x[2 * i]: x[2 * i + 1] for i in range(k)}
    out = {}
    for i in range(2 * k, len(x)):
        if x[i] in table:  # a query key; its value is the answer
            out[i] = table[x[i]]
    return out


def solve_listops(tokens):
    """Stack-based evaluation of the token string (independent of the recursive generator)."""
    stack = []
    for t in tokens:
        if t == tasks.LISTOPS_PAD:
            continue
        if t == tasks.LISTOPS_END:
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            args = sorted(args)
            val = {"[MIN": args[0], "[MAX": args[-1], "[SM": sum(args) % 10,
                   "[MED": int(np.floor(np.median(args)))}[op]  # fmt: skip
            stack.append(val)
        elif t >= 11:
            stack.append(tasks.LISTOPS_OPS[t - 11])
        else:
            stack.append(t - 1)
    assert len(stack) == 1
    return stack[0]


def _check_labels(batch, solver):
    x, y, m = _np(batch)
    for b in range(x.shape[0]):
        ans = solver(list(x[b]))
        assert sorted(np.nonzero(m[b])[0].tolist()) == sorted(ans)
        for i, v in ans.items():
            assert y[b, i] == v


# ------------------------------------------------------------------ label correctness


@pytest.mark.parametrize("L,M,A", [(6, 3, 5), (10, 4, 16)])
def test_selective_copying_labels(L, M, A):
    task = tasks.make("selective_copying", vocab_size=A, seq_len=L, num_tokens=M)
    batch = task.sample(KEY, 32)
    assert batch.inputs.shape == (32, L + 2 * M)
    _check_labels(batch, lambda x: solve_selective_copying(x, A))
    # data tokens land anywhere among the first L + M positions (not just at the end)
    first = np.argmax(np.asarray(batch.inputs) > 0, axis=1)
    assert first.min() < L


@pytest.mark.parametrize("T", [6, 16])
def test_induction_heads_labels(T):
    task = tasks.make("induction_heads", vocab_size=6, seq_len=T)
    _check_labels(task.sample(KEY, 32), lambda x: solve_induction(x, 6))
    _check_labels(task.sample(KEY, 8, 4 * T), lambda x: solve_induction(x, 6))  # other length


def test_mqar_labels():
    task = tasks.make("mqar", vocab_size=16, seq_len=20, num_kv_pairs=3)
    batch = task.sample(KEY, 32)
    _check_labels(batch, lambda x: solve_mqar(x, 16, 3))
    assert np.all(np.asarray(batch.mask).sum(1) == 3)  # every key queried once


def test_listops_labels_and_lengths():
    task = tasks.make("listops", seq_len=40, min_len=5, max_depth=4, max_args=4, pool_size=64)
    x, y, m = _np(task.sample(KEY, 64))
    for b in range(64):
        assert y[b, -1] - 1 == solve_listops(list(x[b]))
        n = int(np.sum(x[b] > 0))
        assert 5 < n <= 40 and np.all(x[b, : 40 - n] == 0)  # left padding
    assert np.all(m[:, -1] == 1) and m.sum() == 64


def test_listops_eval_set_is_held_out():
    kw = dict(seq_len=40, min_len=5, max_depth=4, max_args=4, pool_size=64, test_size=48)
    task = tasks.make("listops", **kw)
    train = {tuple(r) for r in _np(task.sample(KEY, 512))[0]}
    x, y, m = _np(task.sample_eval(KEY, 256))
    test = {tuple(r) for r in x}
    assert len(train) > 50 and len(test) > 40  # both pools are covered
    assert not train & test  # no evaluation example is a training example
    for b in range(256):
        assert y[b, -1] - 1 == solve_listops(list(x[b]))
    assert np.all(m[:, -1] == 1)
    # the exclusion itself: the same seed would regenerate exactly these trees
    args = (5, 41, 4, 4)
    a = tasks.listops_pool(20, 0, *args)
    ex = {tuple(t) for t, _ in a[:10]}
    b = tasks.listops_pool(20, 0, *args, exclude=ex)
    assert not {tuple(t) for t, _ in b} & ex and b[0][0] == a[10][0]
    # the generated tasks evaluate on fresh draws of the same generator
    ind = tasks.make("induction_heads", seq_len=12)
    np.testing.assert_array_equal(_np(ind.sample_eval(KEY, 4))[0], _np(ind.sample(KEY, 4))[0])


def elimination_accuracy(x, scored, k):
    """Expected accuracy of guessing uniformly among the context's values not yet revealed in
    the sequence (an answer is revealed as the input right after its query)."""
    values = set(x[1 : 2 * k : 2].tolist())
    accs = []
    for p in np.flatnonzero(scored):
        revealed = {x[q + 1] for q in np.flatnonzero(scored) if q < p}
        accs.append(1.0 / len(values - revealed))
    return accs


@pytest.mark.parametrize("k,seq_len", [(3, 20), (8, 128), (16, 256)])
def test_mqar_baseline_is_the_elimination_guess(k, seq_len):
    task = tasks.make("mqar", vocab_size=64, seq_len=seq_len, num_kv_pairs=k)
    x, y, m = _np(task.sample(KEY, 16))
    accs = []
    for b in range(16):
        for p in np.flatnonzero(m[b]):  # the answer is always among the guessed values
            revealed = {x[b, q + 1] for q in np.flatnonzero(m[b]) if q < p}
            assert y[b, p] in set(x[b, 1 : 2 * k : 2].tolist()) - revealed
        accs += elimination_accuracy(x[b], m[b], k)
    assert task.baseline.accuracy == pytest.approx(np.mean(accs), rel=1e-12)
    want = {3: (1 + 1 / 2 + 1 / 3) / 3, 8: 0.33973, 16: 0.21130}[k]  # H(K) / K
    assert task.baseline.accuracy == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize("name,kw,answers", [
    ("selective_copying", dict(vocab_size=8, seq_len=10, num_tokens=4), 6),
    ("induction_heads", dict(vocab_size=6, seq_len=12), 5),
])  # fmt: skip
def test_chance_baseline_is_one_over_the_answer_alphabet(name, kw, answers):
    task = tasks.make(name, **kw)
    _, y, m = _np(task.sample(KEY, 512))
    assert len(np.unique(y[m > 0])) == answers  # every answer token occurs, no other
    assert task.baseline.accuracy == pytest.approx(1 / answers)


def test_listops_baseline_is_the_training_majority_on_held_out_trees():
    kw = dict(seq_len=40, min_len=5, max_depth=4, max_args=4, pool_size=64, test_size=48)
    task = tasks.make("listops", **kw)
    args = (5, 41, 4, 4)  # min_len, seq_len + 1, max_depth, max_args: the task's own pools
    train = tasks.listops_pool(64, 0, *args)
    test = tasks.listops_pool(48, [0, 1], *args, exclude={tuple(t) for t, _ in train})
    values = [v for _, v in train]
    top = max(range(10), key=lambda v: (values.count(v), -v))
    assert task.baseline.accuracy == pytest.approx(np.mean([v == top for _, v in test]))
    assert f"always {top}" in task.baseline.rule
    # the held-out rows the evaluation draws score the same constant answer at that rate
    _, y, m = _np(task.sample_eval(KEY, 4096))
    assert np.mean(y[:, -1] - 1 == top) == pytest.approx(task.baseline.accuracy, abs=0.03)


def test_listops_value_golden():
    # [MAX 2 [MIN 4 7 ] 0 ] = max(2, 4, 0) = 4;  [SM 5 6 [MED 1 2 9 ] ] = (5 + 6 + 2) % 10 = 3
    assert tasks.listops_value((1, [2, (0, [4, 7]), 0])) == 4
    assert tasks.listops_value((3, [5, 6, (2, [1, 2, 9])])) == 3


# ------------------------------------------------------------------ determinism, registry, metrics


@pytest.mark.parametrize("name", tasks.names())
def test_deterministic_under_a_seed(name):
    kwargs = {
        "listops": dict(seq_len=40, min_len=5, max_depth=4, max_args=4, pool_size=32),
        "mqar": dict(vocab_size=16, seq_len=20, num_kv_pairs=3),
    }.get(name, dict(seq_len=12))
    task = tasks.make(name, **kwargs)
    a, b = _np(task.sample(KEY, 8)), _np(task.sample(KEY, 8))
    c = _np(task.sample(jax.random.PRNGKey(1), 8))
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])
    if name == "listops":  # the pool itself is a function of the seed
        d = _np(tasks.make(name, **kwargs).sample(KEY, 8))
        np.testing.assert_array_equal(a[0], d[0])


def test_unknown_task_lists_names():
    with pytest.raises(ValueError, match="registered tasks"):
        tasks.make("copy_everything")
    with pytest.raises(ValueError, match="fixed seq_len"):
        tasks.make("listops", seq_len=40, min_len=5, max_depth=4, pool_size=8).sample(KEY, 2, 50)


def test_accuracy_and_loss_golden():
    # 2 sequences, scored positions: (0,1), (1,0), (1,1); predictions right at (0,1) and (1,0).
    targets = jnp.array([[0, 2], [1, 0]])
    mask = jnp.array([[0.0, 1.0], [1.0, 1.0]])
    pred = jnp.array([[1, 2], [1, 2]])
    logits = jax.nn.one_hot(pred, 3) * 10.0
    acc = tasks.accuracy(logits, tasks.Batch(targets, targets, mask))
    assert float(acc["token_acc"]) == pytest.approx(2 / 3)  # 2 of 3 scored tokens
    assert float(acc["seq_acc"]) == pytest.approx(0.5)  # sequence 0 all right, sequence 1 not
    uniform = tasks.loss_fn(jnp.zeros((2, 2, 3)), tasks.Batch(targets, targets, mask))
    assert float(uniform) == pytest.approx(np.log(3), rel=1e-6)
