"""Data parallelism over local devices: one mesh axis, the batch sharded along it.

Trainers keep parameters replicated and shard the leading (batch) axis of their data over a
1-D :class:`jax.sharding.Mesh`; ``jax.jit`` then partitions the computation and inserts the
gradient all-reduce itself (GSPMD), so the training step is written as for one device.

On CPU, tests emulate several devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
(set before JAX is imported). On several hosts, call :func:`jax.distributed.initialize` first
(see README, "Multi-host"); ``jax.devices()`` then lists every host's devices and the same mesh
spans them.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

BATCH_AXIS = "batch"


def make_mesh(num_devices: int | None = None, axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (all of them by default)."""
    devices = jax.devices()
    n = len(devices) if num_devices is None else num_devices
    if not 1 <= n <= len(devices):
        raise ValueError(f"num_devices={num_devices} must be in [1, {len(devices)}]")
    return Mesh(np.asarray(devices[:n]), (axis_name,))


def batch_sharding(mesh: Mesh, axis_name: str = BATCH_AXIS) -> NamedSharding:
    """Sharding that splits an array's leading axis over ``axis_name``."""
    return NamedSharding(mesh, PartitionSpec(axis_name))


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy of an array on every device of ``mesh``."""
    return NamedSharding(mesh, PartitionSpec())


def shard_batch(tree: Any, mesh: Mesh, axis_name: str = BATCH_AXIS) -> Any:
    """Places every leaf with its leading axis split over the mesh.

    Raises:
      ValueError: a leaf's leading axis is not divisible by the number of devices.
    """
    n = mesh.shape[axis_name]

    def put(x):
        if np.ndim(x) == 0 or np.shape(x)[0] % n:
            raise ValueError(
                f"batch axis of size {np.shape(x)[:1]} cannot be split over {n} devices; "
                f"use a batch size divisible by {n}"
            )
        return jax.device_put(x, batch_sharding(mesh, axis_name))

    return jax.tree.map(put, tree)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Places every leaf fully on every device of ``mesh`` (parameters, optimizer state)."""
    return jax.device_put(tree, replicated(mesh))
