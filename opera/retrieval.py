"""Retrievers over the synthetic corpus and NDCG@k (OPERA retrieves with BGE-M3 over FAISS,
FLOWRL.md §7.1; here: BM25 from ``rank_bm25`` and a small learned dense retriever in a FAISS
index).

Both retrievers reduce to a term-score table ``T f32[V, D]`` so that scoring a token query inside
a jitted rollout is a gather-and-sum, ``score(q, d) = sum_{t in q} T[t, d]``:

* BM25 (Okapi, ``rank_bm25.BM25Okapi``) is additive over query terms, so ``T[t] =
  bm25.get_scores([t])`` reproduces ``bm25.get_scores(q)`` exactly (duplicates count twice in
  both);
* the dense retriever scores ``<mean_t E_q[t], e_d>``, again additive: ``T = E_q e_D^T / |q|``
  up to the constant ``1/|q|`` (queries here have a fixed length), with the document vectors
  ``e_D`` held in a ``faiss.IndexFlatIP`` for host-side search.
"""

from __future__ import annotations

from typing import NamedTuple

import faiss
import jax
import jax.numpy as jnp
import numpy as np
import optax
from rank_bm25 import BM25Okapi

from harness import Registry
from opera.world import PAD, World

Array = jax.Array


class Retriever(NamedTuple):
    """term_scores: f32[V, D] (see the module docstring); name: the registry name."""

    term_scores: Array
    name: str


def _doc_terms(docs: np.ndarray) -> list[list[str]]:
    return [[str(int(t)) for t in d if t != PAD] for d in docs]


def bm25_term_scores(docs: np.ndarray, vocab_size: int) -> np.ndarray:
    """``T[t, d]`` = Okapi BM25 score of the one-term query ``[t]`` for document ``d``."""
    bm25 = BM25Okapi(_doc_terms(docs))
    return np.stack([bm25.get_scores([str(t)]) for t in range(vocab_size)]).astype(np.float32)


def bm25_scores_reference(docs: np.ndarray, query: np.ndarray) -> np.ndarray:
    """``rank_bm25`` scores of one token query (PAD dropped): f64[D]. The plain reference."""
    bm25 = BM25Okapi(_doc_terms(docs))
    return bm25.get_scores([str(int(t)) for t in query if t != PAD])


def make_bm25(world: World, seed: int = 0) -> Retriever:
    del seed
    return Retriever(jnp.asarray(bm25_term_scores(world.docs, world.vocab.size)), "bm25")


def _dense_pairs(world: World) -> tuple[np.ndarray, np.ndarray]:
    """(query tokens i32[F, 3], gold doc i32[F]) for every fact, canonical relation tokens only:
    like BM25, the retriever knows the documents' vocabulary, not the questions' aliases."""
    v = world.vocab
    e, r = np.meshgrid(np.arange(world.kb.shape[0]), np.arange(v.n_relations), indexing="ij")
    e, r = e.ravel(), r.ravel()
    a, b = v.name(e)
    q = np.stack([v.rel0 + r, a, b], 1)
    return q.astype(np.int32), world.doc_of_fact[e, r].astype(np.int32)


def train_dense(world: World, seed: int, dim: int = 32, steps: int = 300, lr: float = 3e-2):
    """A tiny dual encoder trained with in-corpus softmax (all documents as negatives) on
    (fact query -> document) pairs. Returns (E_q f32[V, dim], doc vectors f32[D, dim])."""
    q, gold = _dense_pairs(world)
    docs = jnp.asarray(world.docs)
    doc_mask = (docs != PAD).astype(jnp.float32)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    params = {
        "q": 0.1 * jax.random.normal(k1, (world.vocab.size, dim)),
        "d": 0.1 * jax.random.normal(k2, (world.vocab.size, dim)),
    }

    def doc_vecs(p):
        return jnp.einsum("dl,dlk->dk", doc_mask, p["d"][docs]) / doc_mask.sum(1, keepdims=True)

    def loss(p):
        logits = p["q"][q].mean(1) @ doc_vecs(p).T
        return optax.softmax_cross_entropy_with_integer_labels(logits, gold).mean()

    opt = optax.adam(lr)

    def step(carry, _):
        p, s = carry
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), None

    (params, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, opt.init(p)), None, steps))(params)
    return np.asarray(params["q"]), np.asarray(doc_vecs(params))


def faiss_index(doc_vectors: np.ndarray) -> faiss.IndexFlatIP:
    """Exact inner-product FAISS index over the document vectors."""
    index = faiss.IndexFlatIP(doc_vectors.shape[1])
    index.add(np.ascontiguousarray(doc_vectors, dtype=np.float32))
    return index


def make_dense(world: World, seed: int = 0) -> Retriever:
    e_q, e_d = train_dense(world, seed)
    return Retriever(jnp.asarray(e_q @ e_d.T), "dense")


RETRIEVERS: Registry = Registry("retriever")
RETRIEVERS.register("bm25")(make_bm25)
RETRIEVERS.register("dense")(make_dense)


def scores(retriever: Retriever, query: Array) -> Array:
    """Scores of token queries i32[..., Lq] against every document: f32[..., D] (PAD scores 0
    for BM25; for dense, PAD carries a learned vector like any token, the same for all queries
    of a given length, so rankings are unaffected)."""
    return jnp.sum(retriever.term_scores[query], axis=-2)


def top_k(retriever: Retriever, query: Array, k: int) -> Array:
    """Indices of the k best documents, i32[..., k], best first (ties: lower index first)."""
    return jax.lax.top_k(scores(retriever, query), k)[1]


def ndcg_at_k(ranked: Array, relevant: Array) -> Array:
    """Binary-relevance NDCG@k (Järvelin & Kekäläinen 2002): ``DCG = sum_i rel_i / log2(i + 2)``
    over the ranked list, divided by the ideal DCG of ``min(#relevant, k)`` hits.

    ranked: i32[..., k] document ids; relevant: bool[..., D]. Returns f32[...]; 0 when nothing
    is relevant.
    """
    k = ranked.shape[-1]
    discount = 1.0 / jnp.log2(jnp.arange(k) + 2.0)
    hits = jnp.take_along_axis(relevant, ranked, axis=-1).astype(jnp.float32)
    n_rel = jnp.minimum(relevant.sum(-1), k)
    ideal = jnp.sum(jnp.where(jnp.arange(k) < n_rel[..., None], discount, 0.0), -1)
    return jnp.where(n_rel > 0, jnp.sum(hits * discount, -1) / jnp.maximum(ideal, 1e-9), 0.0)


def ndcg_reference(doc_scores: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Brute-force NDCG@k from full scores: a stable sort of every document (ties by index)."""
    order = np.argsort(-doc_scores, kind="stable")[:k]
    dcg = sum(1.0 / np.log2(i + 2) for i, d in enumerate(order) if relevant[d])
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(int(relevant.sum()), k)))
    return dcg / ideal if ideal > 0 else 0.0


def question_ndcg(retriever: Retriever, world: World, k: int, canonical_queries: bool) -> Array:
    """Mean NDCG@k of the per-hop gold sub-queries ``[rel, subject name]`` of the test
    questions against their gold documents (alias or canonical relation token)."""
    qs, v = world.test, world.vocab
    rows = []
    for i in range(qs.rels.shape[1]):
        ok = qs.rels[:, i] >= 0
        rel_tok = v.rel0 + qs.rels[ok, i] if canonical_queries else qs.surface[ok, i]
        a, b = v.name(qs.chain[ok, i])
        query = jnp.asarray(np.stack([rel_tok, a, b], 1))
        relevant = jnp.asarray(np.arange(len(world.docs))[None] == qs.gold_docs[ok, i, None])
        rows.append(ndcg_at_k(top_k(retriever, query, k), relevant))
    return jnp.mean(jnp.concatenate(rows))
