"""A synthetic multi-hop QA world for OPERA / MAPGRPO (FLOWRL.md §7, §8.2 "OPERA / MAPGRPO").

Everything is generated from one integer seed with numpy:

* entities named by two tokens (a first-name and a last-name token), so answers have two tokens
  and token-level F1 differs from EM, and names share tokens (lexical distractors for BM25);
* relations with two surface forms: the canonical token (the only one documents use) and an
  alias (questions use it with probability ``alias_prob``); an alias query misses the gold
  document in a lexical retriever, which is what the Rewrite agent is for;
* a total knowledge base ``kb[e, r]`` (every entity has one object per relation);
* a corpus: every fact ``[head_a head_b rel tail_a' tail_b']`` in exactly one document (one or
  two facts per document; the object in object-case tokens, :meth:`Vocab.obj_name`) plus
  distractor documents of facts of a ``noise`` relation;
* 2- to 4-hop questions ``[Q s_k .. s_1 a0 b0]`` (outermost relation first, as in "the boss of
  the mother of X") with gold answers, gold supporting documents and gold plans; test questions
  start from held-out entities that never start a training question.

Gold plan (the Plan agent's interface, OPERA's ``{step_id, sub_question, dependencies}``): per step
three tokens ``[s_i arg_a arg_b]`` where the argument is the start entity's name for step 1 and
``[PH_{i-1} NIL]`` (the placeholder "[entity from step i-1]", i.e. a dependency) after it, then
EOS, right-padded with PAD to ``PLAN_LEN``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

MAX_HOPS = 4
MIN_HOPS = 2
STEP_LEN = 3  # [relation, arg_a, arg_b]
PLAN_LEN = MAX_HOPS * STEP_LEN + 1  # steps + EOS
QUESTION_LEN = 1 + MAX_HOPS + 2  # [Q, relations (left-padded), a0, b0]
FACT_LEN = 5
DOC_LEN = 2 * FACT_LEN

PAD, BOS, EOS, Q, PLAN, DOC, ANA, REW, YES, NO, NIL = range(11)
PH0 = 11  # PH0 + j is "[entity from step j+1]"
N_SPECIAL = PH0 + MAX_HOPS


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """Plain world sizes. ``n_entities = n_first * n_last``."""

    n_first: int = 6
    n_last: int = 6
    n_relations: int = 4
    facts_per_doc: int = 2  # documents hold 1..facts_per_doc facts
    n_distractor_docs: int = 24
    alias_prob: float = 0.5
    heldout_frac: float = 0.25
    n_train_questions: int = 512
    n_test_questions: int = 192


class Vocab(NamedTuple):
    """Token-id layout: specials, canonical relations, aliases, noise relation, name tokens."""

    n_relations: int
    n_first: int
    n_last: int

    @property
    def rel0(self) -> int:
        return N_SPECIAL

    @property
    def alias0(self) -> int:
        return self.rel0 + self.n_relations

    @property
    def noise_rel(self) -> int:
        return self.alias0 + self.n_relations

    @property
    def first0(self) -> int:
        return self.noise_rel + 1

    @property
    def last0(self) -> int:
        return self.first0 + self.n_first

    @property
    def obj_first0(self) -> int:
        return self.last0 + self.n_last

    @property
    def obj_last0(self) -> int:
        return self.obj_first0 + self.n_first

    @property
    def size(self) -> int:
        return self.obj_last0 + self.n_last

    def obj_name(self, entity):
        """The object-case name tokens documents use for a fact's object (like "X's" vs "X": a
        bag-of-words retriever can then tell a fact about X from a fact pointing at X)."""
        return self.obj_first0 + entity // self.n_last, self.obj_last0 + entity % self.n_last

    def name(self, entity):
        """Entity id(s) -> (first-name token, last-name token)."""
        return self.first0 + entity // self.n_last, self.last0 + entity % self.n_last


class World(NamedTuple):
    """The generated world (numpy arrays; ``N`` questions, ``D`` documents, ``H = MAX_HOPS``).

    kb: i32[E, R] object entity of (subject, relation).
    docs: i32[D, DOC_LEN] document tokens (PAD-padded).
    doc_of_fact: i32[E, R] the document holding fact (e, r).
    train / test: :class:`Questions`.
    """

    config: WorldConfig
    vocab: Vocab
    kb: np.ndarray
    docs: np.ndarray
    doc_of_fact: np.ndarray
    heldout: np.ndarray  # bool[E] entities reserved to start test questions
    train: Questions
    test: Questions


class Questions(NamedTuple):
    """A question set. hops: i32[N]; rels / surface: i32[N, H] canonical relation index / surface
    token per hop (-1 / PAD beyond ``hops``); chain: i32[N, H+1] entity after each hop (chain[:, 0]
    the start); answer: i32[N]; gold_docs: i32[N, H] (-1 pad); tokens: i32[N, QUESTION_LEN];
    plan: i32[N, PLAN_LEN] the gold plan."""

    hops: np.ndarray
    rels: np.ndarray
    surface: np.ndarray
    chain: np.ndarray
    answer: np.ndarray
    gold_docs: np.ndarray
    tokens: np.ndarray
    plan: np.ndarray


def _corpus(rng: np.random.Generator, cfg: WorldConfig, vocab: Vocab, kb: np.ndarray):
    n_e, n_r = kb.shape
    facts = [(e, r, int(kb[e, r])) for e in range(n_e) for r in range(n_r)]
    noise = [
        (int(rng.integers(n_e)), -1, int(rng.integers(n_e)))
        for _ in range(2 * cfg.n_distractor_docs)
    ]
    order = rng.permutation(len(facts))
    groups, i = [], 0
    while i < len(order):
        k = int(rng.integers(1, cfg.facts_per_doc + 1))
        groups.append([facts[j] for j in order[i : i + k]])
        i += k
    for j in range(cfg.n_distractor_docs):
        groups.append(noise[2 * j : 2 * j + int(rng.integers(1, cfg.facts_per_doc + 1))])
    groups = [groups[j] for j in rng.permutation(len(groups))]
    docs = np.full((len(groups), DOC_LEN), PAD, np.int32)
    doc_of_fact = np.full((n_e, n_r), -1, np.int32)
    for d, group in enumerate(groups):
        for f, (h, r, t) in enumerate(group):
            rel_tok = vocab.noise_rel if r < 0 else vocab.rel0 + r
            docs[d, f * FACT_LEN : (f + 1) * FACT_LEN] = [
                *vocab.name(h),
                rel_tok,
                *vocab.obj_name(t),
            ]
            if r >= 0:
                doc_of_fact[h, r] = d
    return docs, doc_of_fact


def gold_plan_tokens(surface: np.ndarray, hops: int, start_name: tuple[int, int]) -> np.ndarray:
    """The gold plan of one question (see the module docstring): i32[PLAN_LEN]."""
    plan = np.full((PLAN_LEN,), PAD, np.int32)
    for i in range(hops):
        arg = start_name if i == 0 else (PH0 + i - 1, NIL)
        plan[i * STEP_LEN : (i + 1) * STEP_LEN] = [surface[i], *arg]
    plan[hops * STEP_LEN] = EOS
    return plan


def _questions(rng, cfg: WorldConfig, vocab: Vocab, kb, doc_of_fact, starts, n) -> Questions:
    n_r = kb.shape[1]
    hops = rng.integers(MIN_HOPS, MAX_HOPS + 1, size=n).astype(np.int32)
    rels = np.full((n, MAX_HOPS), -1, np.int32)
    surface = np.full((n, MAX_HOPS), PAD, np.int32)
    chain = np.zeros((n, MAX_HOPS + 1), np.int32)
    gold_docs = np.full((n, MAX_HOPS), -1, np.int32)
    tokens = np.full((n, QUESTION_LEN), PAD, np.int32)
    plan = np.zeros((n, PLAN_LEN), np.int32)
    chain[:, 0] = rng.choice(starts, size=n)
    for q in range(n):
        k = int(hops[q])
        for i in range(k):
            r = int(rng.integers(n_r))
            rels[q, i] = r
            alias = rng.random() < cfg.alias_prob
            surface[q, i] = (vocab.alias0 if alias else vocab.rel0) + r
            gold_docs[q, i] = doc_of_fact[chain[q, i], r]
            chain[q, i + 1] = kb[chain[q, i], r]
        chain[q, k + 1 :] = chain[q, k]
        start = vocab.name(int(chain[q, 0]))
        tokens[q, 0] = Q
        tokens[q, 1 + MAX_HOPS - k : 1 + MAX_HOPS] = surface[q, :k][::-1]
        tokens[q, -2:] = start
        plan[q] = gold_plan_tokens(surface[q], k, start)
    answer = chain[np.arange(n), hops]
    return Questions(hops, rels, surface, chain, answer, gold_docs, tokens, plan)


def make_world(seed: int, cfg: WorldConfig = WorldConfig()) -> World:
    """Generates the world deterministically from ``seed``."""
    rng = np.random.default_rng(seed)
    vocab = Vocab(cfg.n_relations, cfg.n_first, cfg.n_last)
    n_e = cfg.n_first * cfg.n_last
    kb = np.zeros((n_e, cfg.n_relations), np.int32)
    for e in range(n_e):
        kb[e] = rng.choice(np.delete(np.arange(n_e), e), size=cfg.n_relations)
    docs, doc_of_fact = _corpus(rng, cfg, vocab, kb)
    heldout = np.zeros((n_e,), bool)
    heldout[rng.permutation(n_e)[: max(1, int(round(cfg.heldout_frac * n_e)))]] = True
    train = _questions(
        rng, cfg, vocab, kb, doc_of_fact, np.flatnonzero(~heldout), cfg.n_train_questions
    )
    test = _questions(rng, cfg, vocab, kb, doc_of_fact, np.flatnonzero(heldout),
                      cfg.n_test_questions)  # fmt: skip
    return World(cfg, vocab, kb, docs, doc_of_fact, heldout, train, test)


def canonical(vocab: Vocab, rel_token):
    """Surface relation token -> canonical relation index (aliases folded), -1 if not a relation.
    Works on numpy and jax arrays."""
    rel = rel_token - vocab.rel0
    alias = rel_token - vocab.alias0
    is_rel = (rel >= 0) & (rel < vocab.n_relations)
    is_alias = (alias >= 0) & (alias < vocab.n_relations)
    return is_rel * rel + is_alias * alias - (1 - (is_rel | is_alias))


def entity_of(vocab: Vocab, tok_a, tok_b):
    """Name tokens -> entity id, -1 if not a valid (first, last) name. numpy or jax."""
    a = tok_a - vocab.first0
    b = tok_b - vocab.last0
    ok = (a >= 0) & (a < vocab.n_first) & (b >= 0) & (b < vocab.n_last)
    return ok * (a * vocab.n_last + b) - (1 - ok)


def execute_plan_oracle(world: World, plan: np.ndarray, start: int) -> int:
    """Reference executor: runs a plan against the KB with exact lookups (aliases folded).

    Like the pipeline executor, it runs the well-formed steps before the first EOS or malformed
    step (bad relation, forward reference, unknown entity) and returns the last one's entity, or
    -1 when there is no such step. ``start`` is unused (the first step names the entity).
    """
    del start
    vocab = world.vocab
    answers: list[int] = []
    for i in range(MAX_HOPS):
        rel_tok, a, b = (int(t) for t in plan[i * STEP_LEN : (i + 1) * STEP_LEN])
        if rel_tok == EOS:
            break
        r = int(canonical(vocab, rel_tok))
        if PH0 <= a < PH0 + MAX_HOPS and b == NIL:
            j = a - PH0
            subject = answers[j] if j < len(answers) else -1
        else:
            subject = int(entity_of(vocab, a, b))
        if r < 0 or subject < 0:
            break
        answers.append(int(world.kb[subject, r]))
    return answers[-1] if answers else -1
