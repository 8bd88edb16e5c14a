"""Figures that put the arms of one experiment side by side (issue 14; ADARL.md §4).

Each function takes ``runs``: label -> run directories (as :func:`experiments.compare` parses
them) and draws from the files every SAC/AdaRL run writes: ``metrics.jsonl`` (seed means and
``/std`` over the vmapped seeds) and ``robustness.json`` (the trainer's end-of-run grid,
per seed). Only the first directory of a label is drawn (one process = all of its seeds).

* :func:`plot_return_curves`: evaluation return vs gradient steps, a band of one std over seeds,
  and dotted vertical lines where an arm truncated (``train/truncations`` went up).
* :func:`plot_rank_curves`: the actor's rank (``rank/actor_0``) vs gradient steps.
* :func:`plot_heatmaps`: the seed-mean robustness grid of every arm, on one shared colour scale.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import numpy as np

from adarl import robust_eval
from harness.metrics import read_metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers, CI or Colab
    import matplotlib.pyplot as plt

    return plt


def _series(records: Sequence[dict], key: str, x_key: str = "train/grad_steps"):
    """(x, mean, std) of ``key`` over the rows that log it; x from the latest ``x_key`` seen."""
    xs, ys, ss, x = [], [], [], 0.0
    for r in records:
        x = float(r.get(x_key, x))
        if key in r:
            xs.append(x)
            ys.append(float(r[key]))
            ss.append(float(r.get(key + "/std", 0.0)))
    return np.array(xs), np.array(ys), np.array(ss)


def truncation_steps(records: Sequence[dict]) -> list[float]:
    """Gradient steps at which ``train/truncations`` increased (the update that truncated)."""
    x, n, _ = _series(records, "train/truncations")
    return [float(x[i]) for i in range(len(n)) if n[i] > (n[i - 1] if i else 0.0)]


def _curves(runs: Mapping[str, Sequence[str]], key: str, path: str, title: str, ylabel: str):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, dirs) in enumerate(runs.items()):
        records = read_metrics(dirs[0])
        x, y, s = _series(records, key)
        if not len(x):
            continue
        c = colours[i % len(colours)]
        ax.plot(x, y, color=c, label=label)
        ax.fill_between(x, y - s, y + s, color=c, alpha=0.15)
        for t in truncation_steps(records):
            ax.axvline(t, color=c, ls=":", lw=0.8, alpha=0.7)
    ax.set_xlabel("gradient steps")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, title="band: ±1 std over seeds; dotted: truncations", title_fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_return_curves(runs: Mapping[str, Sequence[str]], path: str) -> str:
    return _curves(runs, "eval/return", path, "nominal evaluation return", "return")


def plot_rank_curves(runs: Mapping[str, Sequence[str]], path: str) -> str:
    return _curves(runs, "rank/actor_0", path, "actor hidden-layer rank", "rank")


def plot_heatmaps(runs: Mapping[str, Sequence[str]], path: str) -> str | None:
    """Seed-mean grid returns of every arm that has ``robustness.json``, side by side."""
    grids = {}
    for label, dirs in runs.items():
        p = os.path.join(dirs[0], robust_eval.TRAIN_GRID_FILE)
        if os.path.exists(p):
            with open(p) as f:
                grids[label] = json.load(f)
    if not grids:
        return None
    plt = _pyplot()
    means = {k: np.asarray(g["grid"], np.float64).mean(0) for k, g in grids.items()}
    lo = min(m.min() for m in means.values())
    hi = max(m.max() for m in means.values())
    fig, axes = plt.subplots(1, len(grids), figsize=(3.3 * len(grids) + 1.0, 3.4), squeeze=False)
    for ax, (label, g) in zip(axes[0], grids.items(), strict=True):
        m = means[label]
        im = ax.imshow(m, origin="lower", cmap="viridis", vmin=lo, vmax=hi, aspect="auto")
        # Relative scales when the grid was built from them, else the physical values.
        scales = list(g.get("scales") or ())
        relative = len(scales) == m.shape[0] == m.shape[1]
        ticks = (scales, scales) if relative else tuple(g["values"])
        unit = " (x nominal)" if relative else ""
        ax.set_xticks(range(m.shape[1]), [f"{v:.3g}" for v in ticks[1]], fontsize=7)
        ax.set_yticks(range(m.shape[0]), [f"{v:.3g}" for v in ticks[0]], fontsize=7)
        ax.set_xlabel(f"{g['params'][1]}{unit}", fontsize=8)
        if ax is axes[0][0]:  # shared rows: one label, not one over each neighbour
            ax.set_ylabel(f"{g['params'][0]}{unit}", fontsize=8)
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w", fontsize=6)
        ax.set_title(f"{label}\nmean {m.mean():.0f}, min {m.min():.0f}", fontsize=9)
    fig.colorbar(im, ax=list(axes[0]), label="return (mean over seeds)")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
