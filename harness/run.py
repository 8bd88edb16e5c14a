"""The run loop every trainer's ``train_and_evaluate`` runs through.

An experiment is two pure functions and a loop count:

* ``init(key) -> state``: the whole training state as a pytree of arrays (parameters, optimizer
  states, replay buffers, environment states and the RNG key);
* ``update(state) -> (state, metrics)``: one outer iteration (usually many jitted inner steps),
  ``metrics`` a flat dict of scalar (or per-seed ``(S,)``) arrays.

:func:`run_experiment` drives them and gives every experiment the same outputs in ``workdir``:

* ``config.json``: the resolved config, compared with the one already there before anything
  is written (:func:`harness.workdir.claim_workdir`: a workdir holds one run);
* ``metrics.jsonl``: one JSON object per logged update, ``{"step": int, name: float, ...}``,
  flushed as it is produced, plus TensorBoard event files in ``workdir/tb``;
* ``checkpoints/``: orbax checkpoints every ``checkpoint_every`` updates, the last
  ``keep_checkpoints`` kept. Running the same command again with the same workdir restores the
  newest readable one (an unreadable one is reported and skipped) and cuts every step log back
  to it; a finished run (``summary.json`` present) is not redone;
* ``summary.json`` at the end: final metrics, wall time, seed, JAX version, backend, and the git
  commit (with a dirty flag) of the code that ran, read when this launch started (a commit made
  while a long run trains is not the code it imported);
* PNG plots of the named curves, titled and labelled.

In a multi-process run (issue 23) every process runs the loop and saves its checkpoint shards;
only process 0 (:func:`harness.workdir.is_primary`) writes the other files.

A NaN or Inf in any metric stops the run with :class:`NonFiniteError` naming the update step and
the metric, *before* that state is checkpointed, so the last good checkpoint stays intact.

Config checks (:class:`ConfigError`, ``check_*``) live in :mod:`harness.config`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from tqdm.auto import tqdm

from harness import checkpoint
from harness.config import ConfigError
from harness.metrics import (
    MetricWriter,
    check_finite,
    num_seeds,
    read_metrics,
    to_host_scalars,
    truncate_step_logs,
)
from harness.plots import Plot, plot_curves
from harness.workdir import claim_workdir, git_info, is_primary

Metrics = dict[str, Any]

SUMMARY_FILE = "summary.json"


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def _headline(scalars: Mapping[str, float], keys: Sequence[str] | None) -> dict[str, float]:
    """The metrics a reader watches: ``keys`` where logged, else the first three non-std ones."""
    if keys:
        return {k: scalars[k] for k in keys if k in scalars}
    return {k: v for k, v in scalars.items() if "/std" not in k and k != "step"}


def _fmt(values: Mapping[str, float], limit: int = 3) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in list(values.items())[:limit])


def _initial_state(init, seed: int, mngr, workdir: str, desc: str, num_updates: int, primary: bool):
    """Restores the newest readable checkpoint (found before compiling) or calls ``init``."""
    concrete = None
    try:
        like = checkpoint.abstract_init(init, seed)
    except Exception:  # an init with host-side steps (file reads, value-dependent Python) cannot
        # be traced abstractly; its shapes come from running it, and an error there is real.
        concrete = like = init(jax.random.PRNGKey(seed))
    state, start = checkpoint.restore_latest(mngr, workdir, like)
    if primary:
        truncate_step_logs(workdir, start)
    if state is None:
        return (init(jax.random.PRNGKey(seed)) if concrete is None else concrete), 0
    print(f"[{desc}] resuming from the checkpoint at update {start}/{num_updates}")
    return state, start


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
    plots: Mapping[str, Plot | Sequence[str]] | None = None,
    desc: str = "train",
    progress: bool = True,
    stop_after: int | None = None,
    headline: Sequence[str] | None = None,
    x_label: str = "update (harness step)",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Runs ``update`` ``num_updates`` times from ``init(PRNGKey(seed))`` with logging and resume.

    Args:
      config: the experiment's resolved config (saved as ``config.json``).
      workdir: output directory; created if needed. Reusing it resumes the run; a different
        config there is refused (see :func:`harness.workdir.claim_workdir`).
      init: ``key -> state``; only its shapes are used when resuming.
      update: ``state -> (state, metrics)``; jit it (or its body) yourself.
      num_updates: number of ``update`` calls in the whole run.
      seed: seed of the run's root key.
      checkpoint_every: save every this many updates (and at the end).
      keep_checkpoints: how many recent checkpoints orbax keeps.
      evaluate: optional ``state -> metrics`` (host code allowed), run every ``eval_every``
        updates and at the end; its metrics are logged with the same step.
      eval_every: evaluation period in updates (``None``: only at the end).
      plots: ``{"name.png": Plot | [metric, ...]}`` curves drawn from ``metrics.jsonl``.
      desc: progress-bar label and prefix of the start and end lines.
      progress: show the tqdm progress bar.
      stop_after: testing hook, stop (as if killed) after this many updates, without summary.
      headline: the metrics shown on the progress bar and in the end line (the return,
        accuracy or pass@1 a reader watches); default: the first three logged.
      x_label: the x unit of the plots (what one update is).
      overwrite: move a different run already in ``workdir`` aside instead of refusing.

    Returns:
      The summary dict (also written to ``summary.json``); ``{"interrupted": True, ...}`` if
      stopped by ``stop_after``.
    """
    if num_updates < 1:
        raise ConfigError(f"num_updates={num_updates} must be >= 1")
    if checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every={checkpoint_every} must be >= 1")
    claim_workdir(config, workdir, overwrite=overwrite)
    summary_path = os.path.join(workdir, SUMMARY_FILE)
    if os.path.exists(summary_path):
        with open(summary_path) as f:
            summary = json.load(f)
        if summary.get("num_updates") == num_updates:
            shown = _fmt(_headline(summary.get("final_metrics", {}), headline))
            print(f"[{desc}] {workdir} holds this finished run: {shown}")
            return summary

    primary = is_primary()
    code = git_info()  # now: the checkout may move on while the run trains
    mngr = checkpoint.manager(workdir, keep_checkpoints)
    state, start = _initial_state(init, seed, mngr, workdir, desc, num_updates, primary)
    records = read_metrics(workdir)
    last: dict[str, float] = {k: v for k, v in (records[-1] if records else {}).items()}
    last.pop("step", None)
    devices = jax.devices()
    print(
        f"[{desc}] workdir {workdir}; {len(devices)} {jax.default_backend()} device(s); "
        "compiling the first update ..."
    )
    writer = MetricWriter(workdir, rebuild_tensorboard=True) if primary else None
    t0 = time.time()
    seeds = 1
    bar = tqdm(total=num_updates, initial=start, desc=desc, disable=not progress, unit="upd")
    step = start
    try:
        for step in range(start + 1, num_updates + 1):
            state, metrics = update(state)
            seeds = max(seeds, num_seeds(metrics))
            scalars = to_host_scalars(metrics)
            check_finite(step, scalars)
            is_last = step == num_updates
            if evaluate is not None and (is_last or (eval_every and step % eval_every == 0)):
                ev = to_host_scalars(evaluate(state))
                check_finite(step, ev)
                scalars.update(ev)
            if writer is not None:
                writer.write(step, scalars)
            last.update(scalars)
            if step % checkpoint_every == 0 or is_last:
                checkpoint.save(mngr, step, state)
            bar.update(1)
            shown = _headline(last, headline)
            bar.set_postfix({k: f"{v:.3g}" for k, v in list(shown.items())[:3]}, refresh=False)
            if stop_after is not None and step >= stop_after and not is_last:
                mngr.wait_until_finished()
                return {"interrupted": True, "step": step}
    finally:
        bar.close()
        if writer is not None:
            writer.close()
        mngr.wait_until_finished()
        mngr.close()

    summary = {
        "num_updates": num_updates,
        "final_step": step,
        "final_metrics": last,
        "wall_time_s": time.time() - t0,
        "resumed_from": start,
        "seed": seed,
        "num_seeds": seeds,
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kinds": sorted({d.device_kind for d in devices}),  # "NVIDIA H200", "cpu", ...
        "git": code,
    }
    if not primary:
        print(f"[{desc}] process {jax.process_index()} finished; process 0 writes the run's files")
        return summary
    if plots:
        written = plot_curves(workdir, plots, x_label=x_label, num_seeds=seeds)
        summary["plots"] = [os.path.basename(p) for p in written]
    _write_json(summary_path, summary)
    files = ["metrics.jsonl", "summary.json", *summary.get("plots", [])]
    print(
        f"[{desc}] finished in {summary['wall_time_s']:.0f} s; wrote {', '.join(files)} to "
        f"{workdir}; {_fmt(_headline(last, headline))}"
    )
    return summary
