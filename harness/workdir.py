"""A workdir holds one run: claim it before anything is written, record the code that made it.

:func:`claim_workdir` compares the resolved config with the ``config.json`` already in the
directory *before* anything is written or compiled. A difference stops the command with a short
:class:`WorkdirError` listing the differing fields and the two ways forward (a new workdir, or
``overwrite=True``, which moves the old run aside to ``<workdir>.old-<n>``, never deleting it).
A directory that holds another experiment's run, or files that are not a run, is refused
untouched.

In a multi-process run (``jax.distributed``, issue 23) the processes share one workdir: process 0
claims it and writes, the others follow its verdict, and the fields that say how one launch joins
its processes (:data:`LAUNCH_FIELDS`: each process's id, the coordinator's address, which changes
when a preempted job restarts on other hosts) are not part of what makes two runs the same.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from harness.config import ConfigError

CONFIG_FILE = "config.json"

# How one launch joins its processes, not what the run computes (see the module docstring).
LAUNCH_FIELDS = frozenset({"parallel.process_id", "parallel.coordinator_address"})


class WorkdirError(ConfigError):
    """The workdir cannot hold this run (another run, other files, not a directory)."""


def config_dict(config: Any) -> dict[str, Any]:
    """A config (ConfigDict, dict) as the plain JSON-normalised dict ``config.json`` holds."""
    raw = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return json.loads(json.dumps(raw, sort_keys=True, default=str))


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_diff(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``["field: saved -> current", ...]`` for every leaf that differs (sorted by field),
    :data:`LAUNCH_FIELDS` left out."""
    a, b = _flatten(saved), _flatten(current)
    missing = object()
    rows = []
    for field in sorted((set(a) | set(b)) - LAUNCH_FIELDS):
        va, vb = a.get(field, missing), b.get(field, missing)
        if va != vb:
            fa = "(absent)" if va is missing else repr(va)
            fb = "(absent)" if vb is missing else repr(vb)
            rows.append(f"{field}: {fa} -> {fb}")
    return rows


def _aside_path(workdir: str) -> str:
    n = 1
    while os.path.exists(f"{workdir}.old-{n}"):
        n += 1
    return f"{workdir}.old-{n}"


def _write_json(path: str, obj: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def is_primary() -> bool:
    """Whether this process writes the run's files: the only one, or process 0 of several."""
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def claim_workdir(config: Any, workdir: str, *, overwrite: bool = False) -> None:
    """Makes ``workdir`` this run's own, or raises :class:`WorkdirError` leaving it untouched.

    * absent or empty: created, and ``config.json`` written;
    * holds ``config.json`` equal to ``config``: the same run (resume or a finished run);
    * holds a run of the same experiment with other values: refused with the differing fields,
      unless ``overwrite``, which renames the old run to ``<workdir>.old-<n>`` first;
    * holds another experiment's run (other top-level sections) or other files: refused.

    With several processes only process 0 looks and writes; every process returns after it,
    and all raise if it refused (its reason on process 0, a pointer to it on the others).
    """
    if not jax.distributed.is_initialized() or jax.process_count() == 1:
        _claim(config, workdir, overwrite)
        return
    error = None
    if jax.process_index() == 0:
        try:
            _claim(config, workdir, overwrite)
        except WorkdirError as err:
            error = err
    # A collective: no process goes on (or reads the workdir) before process 0 has decided.
    ok = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if error is not None:
        raise error
    if not ok:
        raise WorkdirError(f"--workdir {workdir} was refused by process 0 (its log says why)")


def _claim(config: Any, workdir: str, overwrite: bool) -> None:
    current = config_dict(config)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir {workdir} exists and is not a directory")
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.isdir(workdir) and os.listdir(workdir):
        if not os.path.exists(path):
            shown = ", ".join(sorted(os.listdir(workdir))[:4])
            raise WorkdirError(
                f"--workdir {workdir} is not empty and holds no run ({shown}, ...); "
                "choose a new or empty directory"
            )
        with open(path) as f:
            saved = json.load(f)
        if set(saved) != set(current):
            raise WorkdirError(
                f"--workdir {workdir} holds another experiment's run (its config has sections "
                f"{', '.join(sorted(set(saved) ^ set(current)))} that this one does not share); "
                "choose a new directory"
            )
        diffs = config_diff(saved, current)
        if diffs and not overwrite:
            shown = "; ".join(diffs[:6]) + ("; ..." if len(diffs) > 6 else "")
            raise WorkdirError(
                f"--workdir {workdir} holds a run with a different config ({len(diffs)} field"
                f"{'s' if len(diffs) > 1 else ''}: {shown}). Use a new --workdir, or pass "
                f"--overwrite to move the old run to {_aside_path(workdir)}"
            )
        if diffs:
            aside = _aside_path(workdir)
            os.replace(workdir, aside)
            print(f"moved the previous run in {workdir} to {aside}")
    os.makedirs(workdir, exist_ok=True)
    if not os.path.exists(path):
        _write_json(path, current)


def git_info(path: str | None = None) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding ``path``."""
    where = os.path.dirname(os.path.abspath(path or __file__))
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    if sha.returncode != 0:
        return {"commit": None, "dirty": None}
    return {"commit": sha.stdout.strip(), "dirty": bool(status.stdout.strip())}
