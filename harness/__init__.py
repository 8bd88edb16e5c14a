"""The shared leaf under ``adarl``, ``ssm`` and ``flowrl``: config checks, registries, the run loop.

It imports nothing from the project. ``experiments/`` (entry points and configs) sits above the
library packages, which sit above this one; see README, "What is where".

* :mod:`harness.config`: :class:`ConfigError` and the field checks trainers run before compiling;
* :mod:`harness.registry`: :class:`Registry`, the single source of names;
* :mod:`harness.run`: :func:`run_experiment` (metrics, TensorBoard, checkpoints and resume,
  NaN stop, plots), built from :mod:`harness.workdir` (one run per workdir, git provenance),
  :mod:`harness.checkpoint` (orbax, fallback past an unreadable checkpoint, :func:`load_state`),
  :mod:`harness.metrics` (step logs, TensorBoard) and :mod:`harness.plots`;
* :mod:`harness.parallel`: the device mesh and batch sharding.
"""

from harness.checkpoint import CHECKPOINT_DIR, CheckpointError, load_state
from harness.config import ConfigError, check_choice, check_int, check_range, select_preset
from harness.metrics import METRICS_FILE, MetricWriter, NonFiniteError, check_finite, read_metrics
from harness.plots import Plot, plot_curves
from harness.registry import Registry
from harness.run import SUMMARY_FILE, run_experiment
from harness.workdir import CONFIG_FILE, WorkdirError, claim_workdir, config_dict, git_info

__all__ = [
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "METRICS_FILE",
    "SUMMARY_FILE",
    "CheckpointError",
    "ConfigError",
    "MetricWriter",
    "NonFiniteError",
    "Plot",
    "Registry",
    "WorkdirError",
    "check_choice",
    "claim_workdir",
    "config_dict",
    "git_info",
    "check_finite",
    "check_int",
    "check_range",
    "load_state",
    "plot_curves",
    "read_metrics",
    "run_experiment",
    "select_preset",
]
