"""The shared leaf under ``adarl``, ``ssm`` and ``flowrl``: config checks, registries, the run loop.

It imports nothing from the project. ``experiments/`` (entry points and configs) sits above the
library packages, which sit above this one; see README, "What is where".

* :mod:`harness.config`: :class:`ConfigError` and the field checks trainers run before compiling;
* :mod:`harness.registry`: :class:`Registry`, the single source of names;
* :mod:`harness.run`: :func:`run_experiment` (metrics, TensorBoard, orbax checkpoints and
  resume, NaN stop, plots) and :func:`load_state`;
* :mod:`harness.parallel`: the device mesh and batch sharding.
"""

from harness.config import ConfigError, check_choice, check_int, check_range, select_preset
from harness.registry import Registry
from harness.run import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    MetricWriter,
    NonFiniteError,
    check_finite,
    load_state,
    plot_curves,
    read_metrics,
    run_experiment,
)

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "ConfigError",
    "MetricWriter",
    "NonFiniteError",
    "Registry",
    "check_choice",
    "check_finite",
    "check_int",
    "check_range",
    "load_state",
    "plot_curves",
    "read_metrics",
    "run_experiment",
    "select_preset",
]
