"""Data parallelism for adarl's trainers (SAC/AdaRL, PPO/RNAC, the wind tunnel; issue 23).

The trainers' step functions are written as for one device; these helpers only *constrain*
where arrays live (``jax.lax.with_sharding_constraint``) and ``jax.jit`` partitions the rest
(GSPMD): batched leaves (parallel envs, the replay buffer, sampled and minibatches, candidate
dynamics) are split over the mesh axis ``"data"``, parameters and optimiser states stay
replicated, and the gradient all-reduce is inserted by XLA. Under ``jax.vmap`` over seeds the
seed axis stays unsharded.

With ``mesh=None`` (a config without a ``parallel`` section, e.g. one saved before issue 23) or
a one-device mesh every helper is the identity, so single-device programs and numbers are
exactly those of the unsharded code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
from jax.sharding import Mesh

import harness
from harness import parallel


def trainer_mesh(config: Any, divisible: Mapping[str, int], trainer: str) -> Mesh | None:
    """The mesh of ``config.parallel`` after the checks every adarl trainer needs.

    Raises :class:`harness.ConfigError` (one line, before anything compiles) for an invalid
    section, ``parallel.fsdp=True`` (adarl's networks are small: parameters stay replicated),
    more devices than exist, or a ``divisible`` field (dotted name -> value) that does not split
    over the ``"data"`` axis. Returns None when ``config`` has no ``parallel`` section.
    """
    if "parallel" not in config:
        return None
    parallel.check_static(config)
    if config.parallel.fsdp:
        raise harness.ConfigError(
            f"config.parallel.fsdp=True is not supported by {trainer} (its networks are small; "
            "parameters and optimiser states stay replicated); use False"
        )
    mesh = parallel.mesh_from_config(config)
    for field, value in divisible.items():
        parallel.check_divisible(field, int(value), mesh)
    return mesh


def _active(mesh: Mesh | None) -> bool:
    return mesh is not None and mesh.size > 1


def data(mesh: Mesh | None, tree: Any, size: int | None = None) -> Any:
    """``tree`` with the leading axis of its leaves split over ``"data"``.

    ``size``: only leaves whose leading axis has this length are constrained (an env state mixes
    per-env leaves with others); None constrains every leaf with at least one axis.
    """
    if not _active(mesh):
        return tree
    spec = parallel.data_sharding(mesh)

    def put(x):
        if x.ndim == 0 or (size is not None and x.shape[0] != size):
            return x
        return jax.lax.with_sharding_constraint(x, spec)

    return jax.tree.map(put, tree)


def replicated(mesh: Mesh | None, tree: Any) -> Any:
    """``tree`` with every leaf kept whole on every device (parameters, optimiser states)."""
    if not _active(mesh):
        return tree
    return jax.lax.with_sharding_constraint(tree, parallel.replicated(mesh))
