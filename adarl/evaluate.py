"""Evaluation of SAC/AdaRL runs: nominal return and a grid of perturbed dynamics, per seed.

ADARL.md §4: evaluations under the fixed nominal dynamics P° (the env's own model) and robustness
sweeps over two physical parameters (App. A.2.4, Fig. 8), here a grid ``nominal · scale`` for
``config.eval.grid_params`` (default the first two parameters of the task's spec) with the
``config.eval.grid_scales`` multipliers, or absolute ``config.eval.grid_values[name]`` (needed
for parameters whose nominal is 0, such as wind). All seeds (vmapped) and all grid points run as one batch.
The grid helpers, JSON layout and heat map are shared with ``adarl.robust_eval`` (issue 7).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from adarl import robust_eval

ROBUSTNESS_FILE = robust_eval.TRAIN_GRID_FILE
HEATMAP_FILE = "robustness.png"


def grid_names(config: Any, spec: Any) -> tuple[str, ...]:
    """The two parameters of the robustness grid (config or the spec's first two)."""
    names = tuple(config.eval.grid_params) or tuple(spec.names[:2])
    if len(names) != 2:
        raise ValueError(
            f"config.eval.grid_params must name 2 parameters of {spec.names}, got {names}"
        )
    return names


def grid_axes(config: Any, spec: Any, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """The physical values of the two grid axes, f64 (n1,), (n2,).

    ``config.eval.grid_values[name]`` (absolute values) where given, else ``nominal · scale``
    for ``config.eval.grid_scales`` (clipped to the spec's bounds). A relative grid around a
    nominal of 0 (e.g. the wind of ant/humanoid) would be all zeros, so such a parameter
    needs absolute values: ValueError naming ``config.eval.grid_values``.
    """
    rel = robust_eval.grid_points(spec, names, list(config.eval.grid_scales))
    absolute = dict(config.eval.get("grid_values", {}) or {})
    unknown = sorted(set(absolute) - set(spec.names))
    if unknown:
        raise ValueError(f"config.eval.grid_values names {unknown}, not parameters of {spec.names}")
    out = []
    for name, values in zip(names, rel, strict=True):
        i = spec.names.index(name)
        if name in absolute:
            v = np.asarray(absolute[name], np.float64)
            out.append(np.clip(v, spec.lower[i], spec.upper[i]))
        elif spec.nominal[i] == 0:
            raise ValueError(
                f"grid parameter {name!r} has nominal 0, so config.eval.grid_scales would give "
                f"an all-zero axis; set config.eval.grid_values.{name} to absolute values"
            )
        else:
            out.append(values)
    return tuple(out)


def robustness(
    fns: Any, agents: Any, config: Any, key: jax.Array, progress: bool = True
) -> dict[str, Any]:
    """Nominal and perturbed returns of every seed.

    Args:
      fns: ``adarl.train.TrainFns`` (its ``evaluate`` and ``envs.spec``).
      agents: AgentState with a leading seed axis (S,).
      config: the run config (``eval.*`` fields).
      key: PRNG key (every grid row and seed uses the same episode keys).
      progress: show a progress bar (rate, ETA) over the grid rows; the rows are evaluated one
        jitted call each (one compile), all seeds and episodes of a row batched.

    Returns:
      dict with ``nominal`` f64 list (S,), ``grid`` (S, n1, n2) nested lists, ``grid_mean`` and
      ``grid_min`` lists (S,), ``params`` names, ``values`` the two value axes, and
      ``mean_grid`` (n1, n2) over seeds.
    """
    spec = fns.envs.spec
    names = grid_names(config, spec)
    v1, v2 = grid_axes(config, spec, names)
    n1, n2, e = len(v1), len(v2), int(config.eval.grid_episodes)
    base = np.tile(spec.nominal.astype(np.float32), (n1, n2, e, 1))
    base[..., spec.names.index(names[0])] = v1[:, None, None]
    base[..., spec.names.index(names[1])] = v2[None, :, None]
    rows = jnp.asarray(base.reshape(n1, n2 * e, spec.dim))
    k_nom, k_grid = jax.random.split(key)
    nominal_fn = jax.jit(jax.vmap(lambda a: fns.evaluate(a, k_nom)))
    row_fn = jax.jit(jax.vmap(lambda a, x: fns.evaluate(a, k_grid, spec.from_vector(x)), (0, None)))
    bar = tqdm(total=n1 + 1, desc="robustness grid", unit="row", disable=not progress)
    nominal = np.asarray(jax.device_get(nominal_fn(agents)), np.float64).mean(-1)
    bar.update(1)
    grid = []
    for row in rows:
        grid.append(np.asarray(jax.device_get(row_fn(agents, row)), np.float64))
        bar.update(1)
    bar.close()
    grid = np.stack(grid, 1).reshape(-1, n1, n2, e).mean(-1)  # (S, n1, n2)
    return {
        "params": list(names),
        "values": [v1.tolist(), v2.tolist()],
        "scales": list(config.eval.grid_scales),
        "nominal": nominal.tolist(),
        "grid": grid.tolist(),
        "grid_mean": grid.mean((1, 2)).tolist(),
        "grid_min": grid.min((1, 2)).tolist(),
        "mean_grid": grid.mean(0).tolist(),
    }


def save(result: dict[str, Any], workdir: str, title: str = "") -> list[str]:
    """Writes ``robustness.json`` and the seed-mean heat map ``robustness.png``."""
    path = os.path.join(workdir, ROBUSTNESS_FILE)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    mean_grid = np.asarray(result["mean_grid"])
    grid = robust_eval.GridResult(
        tuple(result["params"]),
        tuple(np.asarray(v) for v in result["values"]),
        mean_grid,
        np.asarray(result["grid"]).std(0),
        float(np.mean(result["nominal"])),
    )
    png = robust_eval.plot_heatmap(grid, os.path.join(workdir, HEATMAP_FILE), title)
    return [path, png]


def plot_spectra(path_jsonl: str, out_png: str, layer: str = "sv/actor_0") -> str | None:
    """Singular-value spectrum of one layer (seed 0, normalised by σ₁) over gradient steps."""
    if not os.path.exists(path_jsonl):
        return None
    rows = [json.loads(line) for line in open(path_jsonl) if line.strip()]
    rows = [r for r in rows if layer in r]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = np.array([r["grad_steps"] for r in rows], float)
    s = np.array([r[layer][0] for r in rows], float)  # (T, R) seed 0
    s = s / np.maximum(s[:, :1], 1e-12)
    fig, ax = plt.subplots(figsize=(6, 4))
    im = ax.imshow(
        s.T,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(steps[0], steps[-1] if len(steps) > 1 else steps[0] + 1, 0.5, s.shape[1] + 0.5),
    )
    ax.set_xlabel("gradient steps")
    ax.set_ylabel("singular value index")
    ax.set_title(f"{layer} (seed 0), σ_i/σ_1")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
