"""OPERA / MAPGRPO (arXiv 2508.16438) on a synthetic multi-hop QA world (FLOWRL.md §7, §8.2).

Modules: :mod:`opera.world` (world, corpus, questions, gold plans), :mod:`opera.retrieval`
(BM25, a dense retriever in FAISS, NDCG@k), :mod:`opera.agents` (the three role LMs and the
executor), :mod:`opera.rewards` (role rewards, EM/F1), :mod:`opera.sft` (warm start),
:mod:`opera.mapgrpo` (per-role GRPO, gold injection, the single-agent baseline),
:mod:`opera.train` (arms and runs), :mod:`opera.stats` (IQM and bootstrap CIs).
"""
