"""Sweep-to-hypothesis pipeline with a typed relation graph (issue 20; SAFETY_AND_ANALYSIS.md §2,
inspired by PROTEUS, arXiv 2506.07591): raw run directories -> per-seed table -> statistical tools
-> BH-corrected relations -> templated hypotheses and a networkx relation graph -> replication on
held-out seeds or a sister task -> reliability x novelty ranking -> report and the next sweep."""

import os

from hypotheses import analyze, explore, graph, load, pipeline, replicate, report, score, tools

PRIOR_PATH = os.path.join(os.path.dirname(__file__), "prior.json")

__all__ = [
    "PRIOR_PATH",
    "analyze",
    "explore",
    "graph",
    "load",
    "pipeline",
    "replicate",
    "report",
    "score",
    "tools",
]
