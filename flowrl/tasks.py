"""Verifiable synthetic reasoning tasks: generators, exact verifiers, demonstrations, splits.

FLOWRL.md §8.1 (common substrate). Every task is procedural and exactly checkable, with no
download. Two tasks share one small vocabulary (:data:`VOCAB`):

* ``arithmetic`` -- multi-step modular arithmetic with a single final answer. Prompt
  ``<bos> A d op d op ... d =`` with ``n_operands`` digits and ops in ``{+, -, *}``, evaluated
  **left to right modulo 10** (so every intermediate is one digit). A response is free-form and
  ends with ``> a <eos>``; it is correct iff the token two before the first ``<eos>`` is ``>`` and
  the token before ``<eos>`` is the digit of the true answer. The demonstration writes the
  intermediate results: ``r_1 ... r_{n-2} > r_{n-1} <eos>``.
* ``countdown`` -- reach a target with given numbers, **many distinct correct answers**. Prompt
  ``<bos> C n_1 ... n_k = t_1 t_0`` (``k = n_numbers`` digits in 1..max_number, target written
  with two digits). A response is an expression ``a op b op c ... <eos>`` that uses every given
  number exactly once (as a multiset), evaluated **left to right** over the integers (no
  precedence, so no brackets are needed); correct iff it equals the target. Every different token
  string is a different answer (``1+2`` and ``2+1`` count as two), which is what "distinct correct
  answers per prompt" counts. Demonstrations are several different solutions of the prompt.

Train/test split by construction: a problem is a test problem iff an integer hash of its
canonical key (arithmetic: the problem index; countdown: the sorted multiset and the target) falls
in the test fraction, so the two sets are disjoint and fixed independently of any training seed.

Verifiers are pure ``jax.numpy`` over fixed-shape token arrays (jit-able, used inside the
trainer); generators and brute-force solvers run once on the host with numpy.

Shapes: ``N`` problems, ``P`` prompt length, ``R`` response length (the generation budget), ``D``
demonstrations per problem, ``B`` a batch of responses.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

# ---------------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------------

VOCAB: tuple[str, ...] = (
    "<pad>",
    "<bos>",
    "<eos>",
    *[str(d) for d in range(10)],
    "+",
    "-",
    "*",
    "=",
    ">",
    "A",  # arithmetic task tag
    "C",  # countdown task tag
)
VOCAB_SIZE = len(VOCAB)
TOKEN_ID = {s: i for i, s in enumerate(VOCAB)}
PAD, BOS, EOS = TOKEN_ID["<pad>"], TOKEN_ID["<bos>"], TOKEN_ID["<eos>"]
DIGIT0 = TOKEN_ID["0"]
PLUS, MINUS, TIMES = TOKEN_ID["+"], TOKEN_ID["-"], TOKEN_ID["*"]
EQUALS, ANSWER = TOKEN_ID["="], TOKEN_ID[">"]
TAG_ARITHMETIC, TAG_COUNTDOWN = TOKEN_ID["A"], TOKEN_ID["C"]
OPS = (PLUS, MINUS, TIMES)  # op index 0, 1, 2
OP_SYMBOLS = ("+", "-", "*")


def encode(text: str) -> list[int]:
    """Space-separated symbols -> token ids (``"<bos> A 3 + 4 ="``)."""
    try:
        return [TOKEN_ID[s] for s in text.split()]
    except KeyError as e:
        raise ValueError(f"unknown symbol {e.args[0]!r}; vocabulary: {VOCAB}") from None


def decode(tokens, stop_at_eos: bool = True) -> str:
    """Token ids -> space-separated symbols (padding dropped; stops after the first <eos>)."""
    out = []
    for t in np.asarray(tokens).tolist():
        if t == PAD:
            continue
        out.append(VOCAB[t])
        if stop_at_eos and t == EOS:
            break
    return " ".join(out)


def _apply_op(acc, op, x, modulus=None):
    """Left-to-right step ``acc op x`` (numpy or python ints), optionally modulo ``modulus``."""
    out = np.where(op == 0, acc + x, np.where(op == 1, acc - x, acc * x))
    return np.mod(out, modulus) if modulus is not None else out


def _split_hash(key: np.ndarray, salt: int) -> np.ndarray:
    """A fixed integer hash (splitmix64 finaliser) of non-negative int keys -> uniform in [0, 1)."""
    with np.errstate(over="ignore"):
        z = key.astype(np.uint64) + np.uint64(salt) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


# ---------------------------------------------------------------------------------------------
# Task container
# ---------------------------------------------------------------------------------------------


class TaskData(NamedTuple):
    """One split of a task (host numpy arrays; gathered into jax arrays by the trainer).

    Attributes:
      prompts: i32[N, P] fixed-length prompts (start with <bos>).
      answers: i32[N] the ground truth the verifier compares with (arithmetic: the final digit;
        countdown: the target).
      operands: i32[N, K] the prompt's numbers (arithmetic: operands; countdown: the given
        numbers).
      ops: i32[N, K-1] arithmetic operator indices (0 '+', 1 '-', 2 '*'); zeros for countdown.
      demos: i32[N, D, R] demonstration responses, <pad> after <eos>.
      num_demos: i32[N] valid demonstrations per problem (>= 1).
      num_solutions: i32[N] number of distinct correct responses of length <= R (arithmetic: the
        number of answers, 1; countdown: all left-to-right expressions reaching the target).
    """

    prompts: np.ndarray
    answers: np.ndarray
    operands: np.ndarray
    ops: np.ndarray
    demos: np.ndarray
    num_demos: np.ndarray
    num_solutions: np.ndarray

    def __len__(self) -> int:
        return int(self.prompts.shape[0])


class Problems(NamedTuple):
    """The per-row problem data a verifier reads (jax arrays, rows aligned with responses)."""

    answers: Array  # i32[B]
    operands: Array  # i32[B, K]


@dataclasses.dataclass(frozen=True)
class Task:
    """A verifiable task: both splits plus jit-able answer extraction and scoring.

    Attributes:
      name: registry name.
      prompt_len: P, every prompt's length.
      response_len: R, the generation budget (max new tokens).
      train, test: the two splits (disjoint by construction).
      extract: ``(responses i32[B, R], problems) -> i32[B]`` an answer id >= 0 for a well-formed
        response, -1 otherwise. Equal ids = the same answer (majority vote, distinct answers).
      score: ``(responses i32[B, R], problems) -> f32[B]`` 1.0 iff the response is correct.
    """

    name: str
    prompt_len: int
    response_len: int
    train: TaskData
    test: TaskData
    extract: Callable[[Array, Problems], Array]
    score: Callable[[Array, Problems], Array]

    def problems(self, split: TaskData, index: Array) -> Problems:
        """Gathers rows ``index`` (i32[B]) of ``split`` as jax arrays."""
        return Problems(
            answers=jnp.asarray(split.answers)[index], operands=jnp.asarray(split.operands)[index]
        )


def first_eos(responses: Array) -> Array:
    """i32[B]: index of the first <eos> in each row, or R if there is none."""
    R = responses.shape[-1]
    pos = jnp.arange(R)
    return jnp.min(jnp.where(responses == EOS, pos, R), axis=-1)


def response_mask(responses: Array) -> Array:
    """f32[B, R]: 1 on response tokens up to and including the first <eos> (FLOWRL.md §1.1)."""
    pos = jnp.arange(responses.shape[-1])
    return (pos[None, :] <= first_eos(responses)[:, None]).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------------------------


def _arith_eval(operands: np.ndarray, ops: np.ndarray) -> np.ndarray:
    """Left-to-right mod-10 evaluation; returns all intermediates i32[N, K-1]."""
    acc = operands[:, 0]
    inter = []
    for j in range(ops.shape[1]):
        acc = _apply_op(acc, ops[:, j], operands[:, j + 1], modulus=10)
        inter.append(acc)
    return np.stack(inter, axis=1).astype(np.int32)


def make_arithmetic(
    n_operands: int = 4,
    test_fraction: float = 0.2,
    pool_size: int = 20000,
    data_seed: int = 0,
) -> Task:
    """Multi-step left-to-right arithmetic modulo 10 (see the module docstring).

    Args:
      n_operands: K >= 2 digits in the prompt (K-1 operations); the difficulty knob.
      test_fraction: share of all problems in the test split (by hash of the problem index).
      pool_size: at most this many problems kept per split (a fixed random subset).
      data_seed: seed of that subset and of the problem order (fixed data, independent of
        training seeds).
    """
    if n_operands < 2:
        raise ValueError(f"n_operands={n_operands} must be >= 2")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must lie in (0, 1)")
    K = n_operands
    total = 10**K * 3 ** (K - 1)
    index = np.arange(total, dtype=np.int64)
    is_test = _split_hash(index, salt=1) < test_fraction
    rng = np.random.default_rng(data_seed)

    def build(idx: np.ndarray) -> TaskData:
        # A fixed random order: problems are enumerated by index, so any prefix (the SFT
        # fraction, the evaluation prompts) would otherwise cover only some operator patterns.
        idx = rng.permutation(idx)[:pool_size]
        rest = idx.copy()
        digits = []
        for _ in range(K):
            digits.append(rest % 10)
            rest //= 10
        ops = []
        for _ in range(K - 1):
            ops.append(rest % 3)
            rest //= 3
        operands = np.stack(digits, 1).astype(np.int32)
        ops = np.stack(ops, 1).astype(np.int32)
        inter = _arith_eval(operands, ops)
        n = len(idx)
        prompt = [np.full(n, BOS), np.full(n, TAG_ARITHMETIC), DIGIT0 + operands[:, 0]]
        for j in range(K - 1):
            prompt += [np.asarray(OPS)[ops[:, j]], DIGIT0 + operands[:, j + 1]]
        prompt.append(np.full(n, EQUALS))
        # Demonstration: intermediates r_1..r_{K-2}, then '> r_{K-1} <eos>'; length K + 1.
        demo = [DIGIT0 + inter[:, j] for j in range(K - 2)]
        demo += [np.full(n, ANSWER), DIGIT0 + inter[:, -1], np.full(n, EOS)]
        R = K + 2  # one token of slack beyond the demonstration
        demos = np.full((n, 1, R), PAD, np.int32)
        demos[:, 0, : K + 1] = np.stack(demo, 1)
        return TaskData(
            prompts=np.stack(prompt, 1).astype(np.int32),
            answers=inter[:, -1].astype(np.int32),
            operands=operands,
            ops=ops,
            demos=demos,
            num_demos=np.ones(n, np.int32),
            num_solutions=np.ones(n, np.int32),
        )

    train, test = build(index[~is_test]), build(index[is_test])
    return Task(
        name="arithmetic",
        prompt_len=2 * K + 2,
        response_len=K + 2,
        train=train,
        test=test,
        extract=arithmetic_extract,
        score=arithmetic_score,
    )


def arithmetic_extract(responses: Array, problems: Problems | None = None) -> Array:
    """i32[B]: the final digit of a well-formed ``... > d <eos>`` response, else -1."""
    del problems  # the answer format does not depend on the prompt
    R = responses.shape[-1]
    e = first_eos(responses)
    rows = jnp.arange(responses.shape[0])
    marker = responses[rows, jnp.clip(e - 2, 0, R - 1)]
    digit = responses[rows, jnp.clip(e - 1, 0, R - 1)] - DIGIT0
    ok = (e < R) & (e >= 2) & (marker == ANSWER) & (digit >= 0) & (digit <= 9)
    return jnp.where(ok, digit, -1).astype(jnp.int32)


def arithmetic_score(responses: Array, problems: Problems) -> Array:
    """f32[B]: 1 iff the extracted final answer equals the true answer."""
    ans = arithmetic_extract(responses)
    return ((ans >= 0) & (ans == problems.answers)).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Countdown
# ---------------------------------------------------------------------------------------------


def _countdown_values(numbers: tuple[int, ...]) -> dict[int, list[tuple[tuple[int, ...], tuple]]]:
    """All left-to-right expressions over a permutation of ``numbers`` -> {value: [(perm, ops)]}.

    Distinct token strings only: permutations of repeated numbers are deduplicated.
    """
    out: dict[int, list] = {}
    for perm in sorted(set(itertools.permutations(numbers))):
        for ops in itertools.product(range(3), repeat=len(numbers) - 1):
            acc = perm[0]
            for op, x in zip(ops, perm[1:], strict=True):
                acc = int(_apply_op(acc, op, x))
            out.setdefault(acc, []).append((perm, ops))
    return out


class _CountdownRow(NamedTuple):
    """One problem: split key (multiset digits then target), numbers as shown, target, and its
    distinct solutions ``(order of the numbers, ops)``."""

    key: int
    shown: np.ndarray
    target: int
    solutions: list


def _countdown_rows(k, max_number, max_target, min_solutions, rng) -> list[_CountdownRow]:
    """Every (multiset of k numbers, target in [0, max_target]) with enough solutions, the
    numbers shown in a random order drawn from ``rng``."""
    rows = []
    for multiset in itertools.combinations_with_replacement(range(1, max_number + 1), k):
        values = _countdown_values(multiset)
        for target in sorted(values):
            sols = values[target]
            if not 0 <= target <= max_target or len(sols) < min_solutions:
                continue
            ms_key = 0
            for x in multiset:
                ms_key = ms_key * 10 + x
            shown = np.array(multiset)[rng.permutation(k)]
            rows.append(_CountdownRow(ms_key * 100 + target, shown, target, sols))
    return rows


def _countdown_demo(perm, ops) -> list[int]:
    toks = [DIGIT0 + perm[0]]
    for op, x in zip(ops, perm[1:], strict=True):
        toks += [OPS[op], DIGIT0 + x]
    return [*toks, EOS]


def _countdown_data(rows, sel: np.ndarray, k: int, max_demos: int, rng) -> TaskData:
    """The split of ``rows`` selected by ``sel``, in a fixed random order (rows are enumerated by
    multiset; prefixes must be representative), with up to ``max_demos`` demonstrations each."""
    chosen = [rows[i] for i in rng.permutation(np.flatnonzero(sel))]
    n, R = len(chosen), 2 * k
    prompts = np.zeros((n, k + 5), np.int32)
    demos = np.full((n, max_demos, R), PAD, np.int32)
    num_demos = np.zeros(n, np.int32)
    num_solutions = np.zeros(n, np.int32)
    operands = np.zeros((n, k), np.int32)
    targets = np.zeros(n, np.int32)
    for i, row in enumerate(chosen):
        digits = [DIGIT0 + row.target // 10, DIGIT0 + row.target % 10]
        prompts[i] = [BOS, TAG_COUNTDOWN, *(DIGIT0 + row.shown), EQUALS, *digits]
        operands[i] = row.shown
        targets[i] = row.target
        num_solutions[i] = len(row.solutions)
        pick = rng.permutation(len(row.solutions))[:max_demos]
        num_demos[i] = len(pick)
        for d, j in enumerate(pick):
            demos[i, d] = _countdown_demo(*row.solutions[j])
    return TaskData(
        prompts=prompts,
        answers=targets,
        operands=operands,
        ops=np.zeros((n, k - 1), np.int32),
        demos=demos,
        num_demos=num_demos,
        num_solutions=num_solutions,
    )


def make_countdown(
    n_numbers: int = 4,
    max_number: int = 9,
    max_target: int = 99,
    max_demos: int = 8,
    min_solutions: int = 1,
    test_fraction: float = 0.2,
    data_seed: int = 0,
) -> Task:
    """Countdown-style: reach the target using every given number once (module docstring).

    Every (multiset of numbers, target in [0, max_target]) reachable by a left-to-right expression
    is a problem; the numbers are shown in a fixed random order.

    Args:
      n_numbers: k >= 2 numbers per prompt.
      max_number: numbers are drawn from 1..max_number (<= 9, one token each).
      max_target: targets lie in [0, max_target] (<= 99, two tokens).
      max_demos: D, demonstrations stored per problem (distinct solutions, random order).
      min_solutions: keep only problems with at least this many distinct solutions.
      test_fraction: share of problems in the test split (hash of multiset and target).
      data_seed: seed of the number order, problem order and demonstration choice (fixed data).
    """
    if not 2 <= n_numbers <= 6:
        raise ValueError(f"n_numbers={n_numbers} must lie in [2, 6]")
    if not 1 <= max_number <= 9:
        raise ValueError(f"max_number={max_number} must lie in [1, 9]")
    if not 0 <= max_target <= 99:
        raise ValueError(f"max_target={max_target} must lie in [0, 99]")
    if max_demos < 1 or min_solutions < 1:
        raise ValueError(f"max_demos={max_demos} and min_solutions={min_solutions} must be >= 1")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction} must lie in (0, 1)")
    k = n_numbers
    rng = np.random.default_rng(data_seed)
    rows = _countdown_rows(k, max_number, max_target, min_solutions, rng)
    keys = np.array([r.key for r in rows], dtype=np.int64)
    is_test = _split_hash(keys, salt=2) < test_fraction
    train = _countdown_data(rows, ~is_test, k, max_demos, rng)
    test = _countdown_data(rows, is_test, k, max_demos, rng)
    return Task(
        name="countdown",
        prompt_len=k + 5,
        response_len=2 * k,  # k numbers, k-1 ops, <eos>
        train=train,
        test=test,
        extract=countdown_extract,
        score=countdown_score,
    )


def _countdown_parse(responses: Array, problems: Problems):
    """Shared parse: (well_formed_and_uses_numbers bool[B], value i32[B], answer id i32[B])."""
    k = problems.operands.shape[-1]
    R = responses.shape[-1]
    if R < 2 * k:
        raise ValueError(f"responses have length {R} < 2 * n_numbers = {2 * k}")
    nums = responses[:, 0 : 2 * k - 1 : 2] - DIGIT0  # i32[B, k]
    op_tok = responses[:, 1 : 2 * k - 1 : 2]  # i32[B, k-1]
    op_idx = jnp.argmax(op_tok[..., None] == jnp.asarray(OPS), axis=-1)
    ops_ok = jnp.all(jnp.isin(op_tok, jnp.asarray(OPS)), axis=-1)
    nums_ok = jnp.all((nums >= 1) & (nums <= 9), axis=-1)
    eos_ok = responses[:, 2 * k - 1] == EOS
    same_multiset = jnp.all(jnp.sort(nums, -1) == jnp.sort(problems.operands, -1), axis=-1)
    ok = ops_ok & nums_ok & eos_ok & same_multiset

    def step(acc, xs):
        op, x = xs
        return jnp.where(op == 0, acc + x, jnp.where(op == 1, acc - x, acc * x)), None

    value, _ = jax.lax.scan(step, nums[:, 0], (op_idx.T, nums[:, 1:].T))
    # Answer id: numbers in base 10, then ops in base 3 (< 2^31 for k <= 6).
    ident = jnp.zeros_like(value)
    for j in range(k):
        ident = ident * 10 + jnp.clip(nums[:, j], 0, 9)
    for j in range(k - 1):
        ident = ident * 3 + op_idx[:, j]
    return ok, value, ident


def countdown_extract(responses: Array, problems: Problems) -> Array:
    """i32[B]: an id of the expression if well formed and using the given numbers, else -1."""
    ok, _, ident = _countdown_parse(responses, problems)
    return jnp.where(ok, ident, -1).astype(jnp.int32)


def countdown_score(responses: Array, problems: Problems) -> Array:
    """f32[B]: 1 iff the expression uses exactly the given numbers and reaches the target."""
    ok, value, _ = _countdown_parse(responses, problems)
    return (ok & (value == problems.answers)).astype(jnp.float32)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

TASKS: dict[str, Callable[..., Task]] = {
    "arithmetic": make_arithmetic,
    "countdown": make_countdown,
}


def make_task(name: str, **kwargs) -> Task:
    """Builds a registered task; unknown names raise a ValueError listing the registered ones."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; registered: {sorted(TASKS)}")
    return TASKS[name](**kwargs)


def sample_demos(split: TaskData, index: Array, key: Array) -> Array:
    """i32[B, R]: one demonstration per problem ``index`` (uniform over its stored ones)."""
    demos = jnp.asarray(split.demos)[index]  # i32[B, D, R]
    n = jnp.asarray(split.num_demos)[index]
    pick = jnp.floor(jax.random.uniform(key, n.shape) * n).astype(jnp.int32)
    return demos[jnp.arange(index.shape[0]), jnp.minimum(pick, n - 1)]
