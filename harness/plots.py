"""PNG curves drawn from ``metrics.jsonl``: titled, labelled, with the seed band explained."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from harness.metrics import read_metrics


class Plot(NamedTuple):
    """One figure: the metrics drawn, its title and its y-axis label."""

    keys: Sequence[str]
    title: str = ""
    ylabel: str = ""


def as_plot(spec: Plot | Sequence[str], filename: str) -> Plot:
    """A ``Plot``; a bare list of metric names gets a title from the file name."""
    if isinstance(spec, Plot):
        return spec
    keys = list(spec)
    stem = os.path.splitext(os.path.basename(filename))[0].replace("_", " ")
    return Plot(keys, title=stem, ylabel=keys[0] if len(keys) == 1 else stem)


def plot_curves(
    workdir: str,
    plots: Mapping[str, Plot | Sequence[str]],
    x_key: str = "step",
    x_label: str = "update (harness step)",
    num_seeds: int | None = None,
) -> list[str]:
    """Draws each ``{"file.png": Plot | [metric, ...]}`` entry from ``metrics.jsonl``.

    A metric logged per seed also has ``<name>/std``; it is drawn as a band of one std over the
    ``num_seeds`` seeds, and the legend says so. Returns the paths written.
    """
    # matplotlib costs ~0.5 s to import; only runs that finish pay it.
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers, CI or Colab
    import matplotlib.pyplot as plt

    records = read_metrics(workdir)
    written = []
    for filename, spec in plots.items():
        plot = as_plot(spec, filename)
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = banded = False
        for key in plot.keys:
            rows = [r for r in records if key in r]
            if not rows:
                continue
            x = np.array([r.get(x_key, r["step"]) for r in rows], dtype=float)
            y = np.array([r[key] for r in rows], dtype=float)
            label = f"{key} (mean)" if all(f"{key}/std" in r for r in rows) else key
            (line,) = ax.plot(x, y, label=label)
            if all(f"{key}/std" in r for r in rows):
                s = np.array([r[f"{key}/std"] for r in rows], dtype=float)
                ax.fill_between(x, y - s, y + s, alpha=0.2, color=line.get_color())
                banded = True
            drawn = True
        if drawn:
            if banded:
                seeds = f"{num_seeds} seeds" if num_seeds else "seeds"
                ax.fill_between([], [], [], alpha=0.2, color="grey", label=f"± 1 std over {seeds}")
            ax.set_title(plot.title)
            ax.set_xlabel(x_label)
            ax.set_ylabel(plot.ylabel)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
            fig.tight_layout()
            path = os.path.join(workdir, filename)
            fig.savefig(path, dpi=110)
            written.append(path)
        plt.close(fig)
    return written
