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

import math
import re
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from harness.config import ConfigError

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


# --- The ``parallel`` config section (issue 23) -----------------------------------------------

DATA_AXIS = "data"
AUTO = "auto"


def default_config() -> ml_collections.ConfigDict:
    """The ``parallel`` section every experiment config carries.

    * ``mesh_shape``: devices per mesh axis; one entry may be -1 (all devices the other axes
      leave). Default ``(-1,)``: every device of every process, data parallel.
    * ``axis_names``: one name per axis; trainers shard their batch over ``"data"`` and may
      use a second axis (e.g. ``"seed"``) where they say so.
    * ``coordinator_address``: ``""`` runs one process; ``"host:port"`` calls
      :func:`jax.distributed.initialize` with ``num_processes``/``process_id``; ``"auto"`` lets
      JAX detect SLURM or a Cloud TPU slice.
    * ``fsdp``: shard parameters and optimizer state over ``"data"`` too (trainers that support
      it say so; the others reject True).
    """
    c = ml_collections.ConfigDict()
    c.mesh_shape = (-1,)
    c.axis_names = (DATA_AXIS,)
    c.coordinator_address = ""
    c.num_processes = 0  # 0: from the environment (with "auto") or 1
    c.process_id = -1  # -1: from the environment (with "auto") or 0
    c.fsdp = False
    return c


def _section(config: Any, field: str) -> Any:
    try:
        return config[field]
    except (KeyError, TypeError, AttributeError):
        raise ConfigError(
            f"config.{field} is missing; add harness.parallel.default_config()"
        ) from None


def check_static(config: Any, field: str = "parallel") -> None:
    """Checks the section's fields that need no devices (call before initialize)."""
    p = _section(config, field)
    shape, names = tuple(p.mesh_shape), tuple(p.axis_names)
    if not shape or len(shape) != len(names):
        raise ConfigError(
            f"config.{field}.mesh_shape={shape} and config.{field}.axis_names={names} "
            "need the same non-zero length"
        )
    if DATA_AXIS not in names or len(set(names)) != len(names):
        raise ConfigError(
            f"config.{field}.axis_names={names} must hold {DATA_AXIS!r} once and distinct names"
        )
    if any(not isinstance(s, int) or (s < 1 and s != -1) for s in shape) or shape.count(-1) > 1:
        raise ConfigError(
            f"config.{field}.mesh_shape={shape}: positive integers, at most one -1 (fill)"
        )
    address = p.coordinator_address
    if address not in ("", AUTO) and not re.fullmatch(r"[\w.\-\[\]:]+:\d+", address):
        raise ConfigError(
            f"config.{field}.coordinator_address={address!r}: use '', 'auto' or 'host:port'"
        )
    if address not in ("", AUTO) and p.num_processes < 1:
        raise ConfigError(f"config.{field}.num_processes must be >= 1 with a coordinator address")
    if p.process_id >= max(p.num_processes, 1) and address:
        raise ConfigError(
            f"config.{field}.process_id={p.process_id} must be < num_processes={p.num_processes}"
        )


def initialize(config: Any, field: str = "parallel") -> None:
    """Joins the multi-process runtime when the section asks for it (before any JAX work).

    Idempotent: a second call in the same process does nothing.
    """
    check_static(config, field)
    p = _section(config, field)
    if not p.coordinator_address or jax.distributed.is_initialized():
        return
    if p.coordinator_address == AUTO:
        jax.distributed.initialize()
        return
    jax.distributed.initialize(
        coordinator_address=p.coordinator_address,
        num_processes=p.num_processes,
        process_id=None if p.process_id < 0 else p.process_id,
    )


def mesh_shape(config: Any, field: str = "parallel", num_devices: int | None = None) -> dict:
    """``{axis name: size}`` with -1 filled in; ConfigError if the devices cannot hold it."""
    check_static(config, field)
    p = _section(config, field)
    n = len(jax.devices()) if num_devices is None else num_devices
    shape = list(p.mesh_shape)
    fixed = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if n % fixed:
            raise ConfigError(
                f"config.{field}.mesh_shape={tuple(p.mesh_shape)}: {n} devices are not a "
                f"multiple of {fixed}"
            )
        shape[shape.index(-1)] = n // fixed
    if math.prod(shape) > n:
        raise ConfigError(
            f"config.{field}.mesh_shape={tuple(p.mesh_shape)} needs {math.prod(shape)} devices; "
            f"{n} exist (jax.devices())"
        )
    return dict(zip(p.axis_names, shape, strict=True))


def mesh_from_config(config: Any, field: str = "parallel") -> Mesh:
    """The mesh over the first ``prod(mesh_shape)`` devices of every process."""
    sizes = mesh_shape(config, field)
    devices = np.asarray(jax.devices()[: math.prod(sizes.values())])
    return Mesh(devices.reshape(tuple(sizes.values())), tuple(sizes))


def check_divisible(field: str, value: int, mesh: Mesh, axis: str = DATA_AXIS) -> None:
    """ConfigError unless ``config.<field>`` splits evenly over ``axis`` (before compiling)."""
    n = mesh.shape[axis]
    if value % n:
        raise ConfigError(
            f"config.{field}={value} cannot be split over the {n} devices of mesh axis "
            f"{axis!r}; use a multiple of {n} (or set config.parallel.mesh_shape)"
        )


def data_sharding(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """Leading axis split over ``axis``, other mesh axes replicated."""
    return NamedSharding(mesh, PartitionSpec(axis))


# --- Placing a trainer's state and batch on the mesh (issue 23) -------------------------------


def fsdp_spec(shape: tuple[int, ...], size: int, axis: str = DATA_AXIS) -> PartitionSpec:
    """FSDP layout of one array: its largest dimension divisible by ``size`` split over ``axis``
    (the first such one on a tie), every other dimension replicated; no such dimension (scalars,
    small vectors) -> fully replicated."""
    candidates = [(-d, i) for i, d in enumerate(shape) if d >= size and d % size == 0]
    if size == 1 or not candidates:
        return PartitionSpec()
    dim = min(candidates)[1]
    return PartitionSpec(*(axis if i == dim else None for i in range(len(shape))))


def fsdp_shardings(tree: Any, mesh: Mesh, axis: str = DATA_AXIS) -> Any:
    """Fully sharded data parallel placement (ZeRO-3 style; Rajbhandari et al. 2020, §5) of a
    pytree of arrays (or ``ShapeDtypeStruct``/tracers): one :class:`NamedSharding` per leaf
    from :func:`fsdp_spec`. Under ``jax.jit`` GSPMD inserts the all-gathers before a sharded
    parameter is used and the reduce-scatters of its gradient."""
    size = mesh.shape[axis]
    return jax.tree.map(lambda x: NamedSharding(mesh, fsdp_spec(np.shape(x), size, axis)), tree)


def param_shardings(tree: Any, mesh: Mesh, fsdp: bool) -> Any:
    """:func:`fsdp_shardings` with ``fsdp``, else every leaf replicated."""
    if fsdp:
        return fsdp_shardings(tree, mesh)
    return jax.tree.map(lambda _: replicated(mesh), tree)


def shard_rows(tree: Any, mesh: Mesh, axis: str = DATA_AXIS) -> Any:
    """Inside ``jax.jit``: constrains every leaf's leading axis to be split over ``axis``.

    A leaf whose leading axis does not divide (a scalar, an optional small side batch) is left
    to GSPMD; validators check the batch dimensions that matter with :func:`check_divisible`.
    """
    n = mesh.shape[axis]

    def constrain(x):
        if np.ndim(x) == 0 or np.shape(x)[0] % n:
            return x
        return jax.lax.with_sharding_constraint(x, data_sharding(mesh, axis))

    return jax.tree.map(constrain, tree)


def check_one_device(config: Any, what: str, field: str = "parallel") -> None:
    """ConfigError unless the mesh is one device and FSDP is off (trainers not sharded yet)."""
    sizes = mesh_shape(config, field)
    if math.prod(sizes.values()) != 1 or _section(config, field).fsdp:
        raise ConfigError(
            f"config.{field}.mesh_shape={tuple(_section(config, field).mesh_shape)} "
            f"(fsdp={_section(config, field).fsdp}): the {what} trainer runs on one device and "
            f"is not sharded; set config.{field}.mesh_shape=(1,) and config.{field}.fsdp=False"
        )
