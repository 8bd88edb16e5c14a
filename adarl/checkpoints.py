"""Reading a finished (or checkpointed) run directory: its config and its stacked per-seed state.

The one ``config.json`` reader and the one checkpoint loader of adarl; the per-algorithm loaders
(``adarl.train.load_agents``, ``adarl.rnac.load_policies``) and the registry over them
(:mod:`adarl.loaders`) build on these two.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np

import harness

CONFIG_FILE = "config.json"


def read_config(workdir: str) -> ml_collections.ConfigDict:
    """The run's config from ``workdir/config.json`` (written by the harness)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a run directory?")
    with open(path) as f:
        return ml_collections.ConfigDict(json.load(f))


def load_state(workdir: str, init: Callable[[jax.Array], Any], step: int | None = None) -> Any:
    """The checkpointed state of ``workdir`` (latest, or ``step``), shaped like ``init(key)``.

    ``init`` is only traced (``jax.eval_shape``), never run, so no environment is reset here.
    """
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    like = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    state, _ = harness.load_state(workdir, like=like, step=step)
    return state
