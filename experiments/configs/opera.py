"""Configs for ``experiments/opera.py`` (OPERA / MAPGRPO, FLOWRL.md §7):
``--config experiments/configs/opera.py:<preset>``.

Presets:
  smoke   about a minute on CPU (run by a slow test; ``tiny`` is the default-suite version).
  tiny    the smoke run shrunk further for the default test suite.
  cpu     the README table's scale: all five arms for one seed in one process.
  cpu_long  cpu with four times the RL updates.
Arms: ``--config.arms=sft,mapgrpo,no_gold,no_rewrite,single`` (any subset); seeds:
``--config.seed=S`` (the world stays ``world.seed``).
"""

from __future__ import annotations

import ml_collections

import harness
from harness import parallel


def base() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.progress = True
    c.checkpoint_every = 50
    c.eval_every = 50
    c.arms = "sft,mapgrpo,no_gold,no_rewrite,single"
    c.retriever = "bm25"  # registry: opera.retrieval.RETRIEVERS ("bm25", "dense")
    c.world = ml_collections.ConfigDict(
        {
            "seed": 0,
            "n_first": 6,
            "n_last": 6,
            "n_relations": 4,
            "facts_per_doc": 2,
            "n_distractor_docs": 24,
            "alias_prob": 0.5,
            "heldout_frac": 0.25,
            "n_train_questions": 512,
            "n_test_questions": 192,
        }
    )
    # ssm.lm.LMConfig fields (vocab_size comes from the world).
    c.model = ml_collections.ConfigDict(
        {"layer": "transformer", "d_model": 32, "n_layers": 2, "n_heads": 4, "max_len": 64}
    )
    c.exec = ml_collections.ConfigDict({"top_k": 2, "max_rewrites": 1})
    c.sft = ml_collections.ConfigDict(
        {"updates": 4, "steps_per_update": 50, "batch_size": 64, "lr": 3e-3}
    )
    c.rl = ml_collections.ConfigDict(
        {
            "loss": "grpo",  # registry: flowrl.losses
            "lr": 3e-4,
            "kl_coef": 0.01,  # k3 KL to the role's SFT policy (beta_KL not published)
            "prompts_per_step": 8,
            "group_size": 8,  # paper: G = 8 (7 + 1 gold at refresh points)
            "temperature": 1.0,
            "stage_updates": (15, 15, 15),  # plan, analysis, rewrite
            "refresh_every": 5,  # "reference-refresh points": interval not published
            "gold_injection": True,
            "w_ndcg": 0.9,  # rewrite reward weights: not published
            "w_format": 0.1,
        }
    )
    c.parallel = parallel.default_config()
    c.parallel.mesh_shape = (1,)  # the OPERA trainer is not sharded: one device
    return c


def smoke() -> ml_collections.ConfigDict:
    c = base()
    c.progress = False
    c.arms = "mapgrpo,single"
    c.world.n_train_questions = 256
    c.world.n_test_questions = 96
    c.sft.updates = 3
    c.rl.prompts_per_step = 4
    c.rl.stage_updates = (4, 4, 4)
    c.eval_every = 100
    c.checkpoint_every = 100
    return c


def tiny() -> ml_collections.ConfigDict:
    c = smoke()
    c.arms = "mapgrpo"
    c.world.n_train_questions = 64
    c.world.n_test_questions = 32
    c.model.d_model = 16
    c.model.n_layers = 1
    c.sft.updates = 2
    c.sft.steps_per_update = 30
    c.rl.prompts_per_step = 2
    c.rl.group_size = 4
    c.rl.stage_updates = (1, 1, 1)
    c.rl.refresh_every = 1
    return c


def cpu() -> ml_collections.ConfigDict:
    return base()


def cpu_long() -> ml_collections.ConfigDict:
    """The cpu preset with four times the RL budget (60 updates per stage, 180 for single)."""
    c = base()
    c.rl.stage_updates = (60, 60, 60)
    c.checkpoint_every = 60
    c.eval_every = 60
    return c


PRESETS = {"smoke": smoke, "tiny": tiny, "cpu": cpu, "cpu_long": cpu_long}


def get_config(preset: str | None = None) -> ml_collections.ConfigDict:
    return harness.select_preset(PRESETS, preset or "smoke")
