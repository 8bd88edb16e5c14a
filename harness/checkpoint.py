"""Orbax checkpoints of a whole training state: save, restore, and fall back past a bad one.

A run's checkpoints live in ``workdir/checkpoints/<step>``. :func:`restore_latest` tries them
newest first against the *abstract* state (``jax.eval_shape`` of ``init``), so an unreadable
checkpoint is found before anything compiles; it is reported with its path and the previous
good one is used. With none readable the run stops with one :class:`CheckpointError` line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging as absl_logging

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(FileNotFoundError):
    """No readable checkpoint where one was expected."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))


def manager(workdir: str, keep: int = 1_000_000) -> ocp.CheckpointManager:
    """An orbax manager over ``workdir/checkpoints`` keeping the last ``keep`` steps."""
    # Orbax logs every save and restore at INFO through absl; keep the console readable.
    absl_logging.set_verbosity(absl_logging.WARNING)
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(checkpoint_dir(workdir), options=options)


def abstract(state: Any) -> Any:
    """The state's tree of ``jax.ShapeDtypeStruct`` (arrays or abstract values alike)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)), state)


def abstract_init(init: Callable[[jax.Array], Any], seed: int) -> Any:
    """Shapes and dtypes of ``init(PRNGKey(seed))``, traced without compiling or running it."""
    return jax.eval_shape(init, jax.random.PRNGKey(seed))


def save(mngr: ocp.CheckpointManager, step: int, state: Any) -> None:
    mngr.save(step, args=ocp.args.StandardSave(state))


def restore(mngr: ocp.CheckpointManager, step: int, like: Any, shardings: Any = None) -> Any:
    """Restores ``step`` shaped like ``like`` (arrays or abstract values) onto the default device,
    or placed by ``shardings`` (a tree of :class:`jax.sharding.Sharding` like ``like``, e.g.
    ``jax.tree.map(lambda x: x.sharding, state)``; each process reads only its shards). The
    checkpoint may come from any other mesh: orbax reshards on read."""
    if shardings is None:
        restored = mngr.restore(step, args=ocp.args.StandardRestore(abstract(like)))
        return jax.tree.map(jnp.asarray, restored)
    target = jax.tree.map(
        lambda x, sh: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x), sharding=sh),
        like,
        shardings,
    )
    return mngr.restore(step, args=ocp.args.StandardRestore(target))


def _steps_on_disk(workdir: str) -> list[int]:
    """Every step directory, finished or not (orbax lists only the finished ones)."""
    root = checkpoint_dir(workdir)
    if not os.path.isdir(root):
        return []
    return sorted((int(d) for d in os.listdir(root) if d.isdigit()), reverse=True)


def restore_latest(
    mngr: ocp.CheckpointManager, workdir: str, like: Any, shardings: Any = None
) -> tuple[Any, int]:
    """The newest readable checkpoint and its step; ``(None, 0)`` when there is none at all.

    Unreadable ones (empty, truncated, another state's structure) are skipped with a warning
    naming their path; if every one is unreadable, :class:`CheckpointError` says so in one line.
    """
    steps = _steps_on_disk(workdir)
    bad = []
    for step in steps:
        path = os.path.join(checkpoint_dir(workdir), str(step))
        try:
            state = restore(mngr, step, like, shardings)
        except Exception as err:  # orbax/tensorstore raise many types for a damaged directory
            bad.append(path)
            reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else ""
            print(
                f"warning: checkpoint {path} is unreadable ({type(err).__name__}: {reason}); "
                "trying the previous one",
                file=sys.stderr,
            )
            continue
        return state, step
    if bad:
        raise CheckpointError(
            f"no readable checkpoint in {checkpoint_dir(workdir)} (tried {len(bad)}); "
            "move that directory away to start the run afresh"
        )
    return None, 0


def load_state(
    workdir: str, like: Any, step: int | None = None, shardings: Any = None
) -> tuple[Any, int]:
    """Restores the newest readable (or the given) checkpoint shaped like ``like`` (placed by
    ``shardings``, see :func:`restore`); returns it and its step. Raises
    :class:`CheckpointError` when there is none."""
    mngr = manager(workdir)
    try:
        if step is not None:
            return restore(mngr, step, like, shardings), step
        state, found = restore_latest(mngr, workdir, like, shardings)
        if state is None:
            raise CheckpointError(f"no checkpoint in {checkpoint_dir(workdir)}")
        return state, found
    finally:
        mngr.close()
