"""Metrics as a run writes them: ``metrics.jsonl`` rows, TensorBoard, the NaN/Inf stop.

Every ``*.jsonl`` file in a workdir whose rows carry ``"step"`` (``metrics.jsonl``, and e.g.
AdaRL's ``spectra.jsonl``) is a *step log*: on resume it is cut back to the restored step, and
TensorBoard's event files are rebuilt from the kept rows, so nothing is logged twice.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from tensorboardX import SummaryWriter

METRICS_FILE = "metrics.jsonl"
TB_DIR = "tb"


class NonFiniteError(FloatingPointError):
    """A metric became NaN or Inf during training."""


def to_host_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Flattens a metrics dict to floats; a per-seed ``(S,)`` array gives mean and ``/std``."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        arr = np.asarray(jax.device_get(value), dtype=np.float64)
        if arr.ndim == 0:
            out[name] = float(arr)
        else:
            flat = arr.reshape(arr.shape[0], -1).mean(axis=1) if arr.ndim > 1 else arr
            out[name] = float(flat.mean())
            out[f"{name}/std"] = float(flat.std())
    return out


def num_seeds(metrics: Mapping[str, Any]) -> int:
    """Leading size of the per-seed metrics (1 when every metric is a scalar)."""
    sizes = [np.shape(v)[0] for v in metrics.values() if np.ndim(v) >= 1]
    return max(sizes, default=1)


def check_finite(step: int, metrics: Mapping[str, float]) -> None:
    """Raises :class:`NonFiniteError` naming ``step`` and the first non-finite metric."""
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise NonFiniteError(
                f"training stopped at update step {step}: metric '{name}' is {value}; "
                "the last good checkpoint is kept"
            )


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """Every row of a JSON-lines file (an empty list if there is none)."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_metrics(workdir: str) -> list[dict[str, float]]:
    """Reads every record of ``workdir/metrics.jsonl`` (an empty list if there is none)."""
    return read_jsonl(os.path.join(workdir, METRICS_FILE))


def truncate_step_logs(workdir: str, last_step: int) -> None:
    """Drops rows with ``step > last_step`` from every step log in ``workdir`` (atomically)."""
    for name in sorted(os.listdir(workdir)):
        path = os.path.join(workdir, name)
        if not name.endswith(".jsonl") or not os.path.isfile(path):
            continue
        rows = read_jsonl(path)
        if not rows or not all("step" in r for r in rows):
            continue
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            for r in rows:
                if r["step"] <= last_step:
                    f.write(json.dumps(r) + "\n")
        os.replace(tmp, path)


class MetricWriter:
    """Appends metrics to ``metrics.jsonl`` (flushed per write) and TensorBoard event files.

    ``rebuild_tensorboard``: start ``workdir/tb`` afresh from the rows already in
    ``metrics.jsonl`` (on resume, so TensorBoard holds each step once).
    """

    def __init__(self, workdir: str, tensorboard: bool = True, rebuild_tensorboard: bool = False):
        self.path = os.path.join(workdir, METRICS_FILE)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            tb_dir = os.path.join(workdir, TB_DIR)
            if rebuild_tensorboard and os.path.isdir(tb_dir):
                shutil.rmtree(tb_dir)
            self._tb = SummaryWriter(tb_dir)
            if rebuild_tensorboard:
                for row in read_metrics(workdir):
                    self._write_tb(row["step"], {k: v for k, v in row.items() if k != "step"})

    def _write_tb(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, value, step)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        self._write_tb(step, metrics)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
