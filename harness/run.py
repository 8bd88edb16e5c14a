"""The run loop every trainer's ``train_and_evaluate`` runs through.

An experiment is two pure functions and a loop count:

* ``init(key) -> state``: the whole training state as a pytree of arrays (parameters, optimizer
  states, replay buffers, environment states and the RNG key);
* ``update(state) -> (state, metrics)``: one outer iteration (usually many jitted inner steps),
  ``metrics`` a flat dict of scalar (or per-seed ``(S,)``) arrays.

:func:`run_experiment` drives them and gives every experiment the same outputs in ``workdir``:

* ``config.json``: the resolved config, written before anything is compiled;
* ``metrics.jsonl``: one JSON object per logged update, ``{"step": int, name: float, ...}``,
  flushed as it is produced, plus TensorBoard event files in ``workdir/tb``;
* ``checkpoints/``: orbax checkpoints every ``checkpoint_every`` updates, the last
  ``keep_checkpoints`` kept. Running the same command again with the same workdir restores the
  latest one and continues; a finished run (``summary.json`` present) is not redone;
* ``summary.json`` at the end: final metrics, wall time, seed, JAX version and backend;
* PNG plots of the named curves.

A NaN or Inf in any metric stops the run with :class:`NonFiniteError` naming the update step and
the metric, *before* that state is checkpointed, so the last good checkpoint stays intact.

Config checks (:class:`ConfigError`, ``check_*``) live in :mod:`harness.config`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from harness.config import ConfigError

Metrics = dict[str, Any]


class NonFiniteError(FloatingPointError):
    """A metric became NaN or Inf during training."""


METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def _to_host_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
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


def check_finite(step: int, metrics: Mapping[str, float]) -> None:
    """Raises :class:`NonFiniteError` naming ``step`` and the first non-finite metric."""
    for name, value in metrics.items():
        if not math.isfinite(value):
            raise NonFiniteError(
                f"training stopped at update step {step}: metric '{name}' is {value}; "
                "the last good checkpoint is kept"
            )


class MetricWriter:
    """Appends metrics to ``metrics.jsonl`` (flushed per write) and TensorBoard event files."""

    def __init__(self, workdir: str, tensorboard: bool = True):
        self.path = os.path.join(workdir, METRICS_FILE)
        self._file = open(self.path, "a", buffering=1)  # noqa: SIM115 - closed in close()
        self._tb = None
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        record = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for name, value in metrics.items():
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def read_metrics(workdir: str) -> list[dict[str, float]]:
    """Reads every record of ``workdir/metrics.jsonl`` (an empty list if there is none)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _truncate_metrics(workdir: str, last_step: int) -> None:
    """Drops records after ``last_step`` (written after the checkpoint we resume from)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return
    keep = [r for r in read_metrics(workdir) if r["step"] <= last_step]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in keep:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------


def plot_curves(workdir: str, plots: Mapping[str, Sequence[str]], x_key: str = "step") -> list[str]:
    """Draws each ``{"file.png": [metric, ...]}`` entry from ``metrics.jsonl``; returns paths.

    A metric logged per seed also has ``<name>/std``; it is drawn as a band of one std.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    written = []
    for filename, keys in plots.items():
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for key in keys:
            rows = [r for r in records if key in r]
            if not rows:
                continue
            x = np.array([r.get(x_key, r["step"]) for r in rows], dtype=float)
            y = np.array([r[key] for r in rows], dtype=float)
            (line,) = ax.plot(x, y, label=key)
            if all(f"{key}/std" in r for r in rows):
                s = np.array([r[f"{key}/std"] for r in rows], dtype=float)
                ax.fill_between(x, y - s, y + s, alpha=0.2, color=line.get_color())
            drawn = True
        if drawn:
            ax.set_xlabel(x_key)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = os.path.join(workdir, filename)
            fig.savefig(path, dpi=110)
            written.append(path)
        plt.close(fig)
    return written


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _checkpoint_manager(workdir: str, keep: int):
    import orbax.checkpoint as ocp
    from absl import logging as absl_logging

    # Orbax logs every save and restore at INFO through absl; keep the console readable.
    absl_logging.set_verbosity(absl_logging.WARNING)

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(
        os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR)), options=options
    )


def _abstract(state: Any) -> Any:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.asarray(x).dtype), state)


def _restore(manager, step: int, like: Any) -> Any:
    import orbax.checkpoint as ocp

    restored = manager.restore(step, args=ocp.args.StandardRestore(_abstract(like)))
    # Orbax restores into the same tree structure; put arrays back on the default device.
    return jax.tree.map(jnp.asarray, restored)


def load_state(workdir: str, like: Any, step: int | None = None) -> tuple[Any, int]:
    """Restores the latest (or given) checkpointed state shaped like ``like``; returns it and its step."""
    manager = _checkpoint_manager(workdir, keep=1_000_000)
    step = manager.latest_step() if step is None else step
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, CHECKPOINT_DIR)}")
    state = _restore(manager, step, like)
    manager.close()
    return state, step


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def _config_dict(config: Any) -> Any:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return dict(config)


def run_experiment(
    config: Any,
    workdir: str,
    *,
    init: Callable[[jax.Array], Any],
    update: Callable[[Any], tuple[Any, Metrics]],
    num_updates: int,
    seed: int,
    checkpoint_every: int,
    keep_checkpoints: int = 3,
    evaluate: Callable[[Any], Mapping[str, Any]] | None = None,
    eval_every: int | None = None,
    plots: Mapping[str, Sequence[str]] | None = None,
    desc: str = "train",
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Runs ``update`` ``num_updates`` times from ``init(PRNGKey(seed))`` with logging and resume.

    Args:
      config: the experiment's resolved config (saved as ``config.json``).
      workdir: output directory; created if needed. Reusing it resumes the run.
      init: ``key -> state``; only its shapes are used when resuming.
      update: ``state -> (state, metrics)``; jit it (or its body) yourself.
      num_updates: number of ``update`` calls in the whole run.
      seed: seed of the run's root key.
      checkpoint_every: save every this many updates (and at the end).
      keep_checkpoints: how many recent checkpoints orbax keeps.
      evaluate: optional ``state -> metrics`` (host code allowed), run every ``eval_every``
        updates and at the end; its metrics are logged with the same step.
      eval_every: evaluation period in updates (``None``: only at the end).
      plots: ``{"name.png": [metric, ...]}`` curves drawn from ``metrics.jsonl`` at the end.
      desc: progress-bar label.
      progress: show the tqdm progress bar.
      stop_after: testing hook, stop (as if killed) after this many updates, without summary.

    Returns:
      The summary dict (also written to ``summary.json``); ``{"interrupted": True, ...}`` if
      stopped by ``stop_after``.
    """
    from tqdm.auto import tqdm

    if num_updates < 1:
        raise ConfigError(f"num_updates={num_updates} must be >= 1")
    if checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every={checkpoint_every} must be >= 1")
    os.makedirs(workdir, exist_ok=True)
    summary_path = os.path.join(workdir, SUMMARY_FILE)
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("num_updates") == num_updates:
            print(f"[{desc}] {workdir} already finished; delete summary.json to redo it.")
            return summary
    _write_json(os.path.join(workdir, CONFIG_FILE), _config_dict(config))

    manager = _checkpoint_manager(workdir, keep_checkpoints)
    state = init(jax.random.PRNGKey(seed))
    start = manager.latest_step() or 0
    if start:
        state = _restore(manager, start, state)
        _truncate_metrics(workdir, start)
        records = read_metrics(workdir)
        last_logged = records[-1] if records else {}
        print(f"[{desc}] resuming from checkpoint at update {start}/{num_updates}")

    writer = MetricWriter(workdir)
    t0 = time.time()
    last: dict[str, float] = {
        k: v for k, v in (last_logged if start else {}).items() if k != "step"
    }
    bar = tqdm(total=num_updates, initial=start, desc=desc, disable=not progress, unit="upd")
    step = start
    try:
        for step in range(start + 1, num_updates + 1):
            state, metrics = update(state)
            scalars = _to_host_scalars(metrics)
            check_finite(step, scalars)
            is_last = step == num_updates
            if evaluate is not None and (is_last or (eval_every and step % eval_every == 0)):
                ev = _to_host_scalars(evaluate(state))
                check_finite(step, ev)
                scalars.update(ev)
            writer.write(step, scalars)
            last.update(scalars)
            if step % checkpoint_every == 0 or is_last:
                import orbax.checkpoint as ocp

                manager.save(step, args=ocp.args.StandardSave(state))
            bar.update(1)
            shown = {k: v for k, v in scalars.items() if "/std" not in k}
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(shown.items())[:3]}, refresh=False)
            if stop_after is not None and step >= stop_after and not is_last:
                manager.wait_until_finished()
                return {"interrupted": True, "step": step}
    finally:
        bar.close()
        writer.close()
        manager.wait_until_finished()
        manager.close()

    summary = {
        "num_updates": num_updates,
        "final_step": step,
        "final_metrics": last,
        "wall_time_s": time.time() - t0,
        "resumed_from": start,
        "seed": seed,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
    }
    if plots:
        summary["plots"] = [os.path.basename(p) for p in plot_curves(workdir, plots)]
    _write_json(summary_path, summary)
    return summary
