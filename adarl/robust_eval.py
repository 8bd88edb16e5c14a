"""Robustness evaluation of any trained policy, and the cross-algorithm comparison table.

* :func:`make_return_fn`: deterministic returns (:func:`adarl.acting.episode_returns`) of a
  parametrised policy on a batched environment started under given physical parameters.
* :func:`evaluate_grid`: returns over a 2-D grid of perturbed parameters (ADARL.md §4 / App. A.2.4:
  torso × foot length for Hopper/Walker2d, mass × friction elsewhere), saved as JSON and drawn as
  a heat map.
* :class:`RunPolicies`: the per-seed policies of a run directory, as loaded by
  :func:`adarl.loaders.load_run` (the registry over every algorithm lives above this module).
* :func:`compare`: one table over algorithms × seeds with the interquartile mean (IQM) and
  percentile-bootstrap confidence intervals over seeds (Agarwal et al., "Deep RL at the Edge of the
  Statistical Precipice", NeurIPS 2021; ``rliable``'s IQM is ``scipy.stats.trim_mean(x, 0.25)``).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adarl import acting
from harness.stats import bootstrap_ci, iqm

ROBUST_FILE = "robust_eval.json"
HEATMAP_FILE = "robust_eval.png"


# ---------------------------------------------------------------------------------------------
# Rollouts
# ---------------------------------------------------------------------------------------------


def make_return_fn(env: Any, spec: Any, policy_apply, num_steps: int):
    """``return_fn(x f32 (n, d), keys (n, 2), policy_params) -> f32 (n,)`` on parameter vectors
    in spec order, with ``policy_apply(policy_params, obs) -> action``.

    The policy parameters are an argument (not closed over), so one compilation serves every
    seed and checkpoint. This is the objective the wind tunnel minimises (jit-able,
    differentiable where the simulator is).
    """

    def return_fn(x, keys, policy_params):
        policy_fn = functools.partial(policy_apply, policy_params)
        return acting.episode_returns(env, policy_fn, keys, spec.from_vector(x), num_steps)

    return return_fn


def num_steps(config: Any) -> int:
    """Wrapper steps in one episode: ``ceil(episode_length / action_repeat)``."""
    return math.ceil(config.env.episode_length / config.env.action_repeat)


# ---------------------------------------------------------------------------------------------
# Grid evaluation
# ---------------------------------------------------------------------------------------------


class GridResult(NamedTuple):
    """names: the two parameters; values: two f64 arrays (n1,), (n2,) physical values;
    returns: f64 (n1, n2) mean return over episodes; nominal: mean return at the nominal point."""

    names: tuple[str, str]
    values: tuple[np.ndarray, np.ndarray]
    returns: np.ndarray
    returns_std: np.ndarray
    nominal: float


def grid_points(spec: Any, names: Sequence[str], rel: Sequence[float]) -> tuple[np.ndarray, ...]:
    """Physical values ``nominal · rel`` (clipped to the spec's bounds) for two parameters."""
    if len(names) != 2:
        raise ValueError(f"grid.params must name exactly 2 parameters, got {list(names)}")
    out = []
    for n in names:
        if n not in spec.names:
            raise ValueError(f"grid parameter {n!r} is not in the task's spec {spec.names}")
        i = spec.names.index(n)
        out.append(np.clip(spec.nominal[i] * np.asarray(rel, float), spec.lower[i], spec.upper[i]))
    return tuple(out)


def evaluate_grid(
    env: Any,
    spec: Any,
    policy_apply,
    policy_params: Any,
    names: Sequence[str],
    rel: Sequence[float],
    key: jax.Array,
    episodes: int,
    steps: int,
) -> list[GridResult]:
    """Mean deterministic return on every point of ``names[0] × names[1]`` (others nominal).

    ``policy_params`` has a leading seed axis (S, ...); all seeds, grid points and episodes run
    as one batch with the same reset keys at every grid point (common random numbers). Returns
    one :class:`GridResult` per seed.
    """
    v1, v2 = grid_points(spec, names, rel)
    n1, n2 = len(v1), len(v2)
    base = np.tile(spec.nominal.astype(np.float32), (n1, n2, episodes, 1))
    i1, i2 = spec.names.index(names[0]), spec.names.index(names[1])
    base[..., i1] = v1[:, None, None]
    base[..., i2] = v2[None, :, None]
    x = jnp.asarray(base.reshape(-1, spec.dim))
    nominal_x = jnp.tile(jnp.asarray(spec.nominal, jnp.float32), (episodes, 1))
    x = jnp.concatenate([x, nominal_x], axis=0)
    keys = jnp.tile(jax.random.split(key, episodes), (n1 * n2 + 1, 1))
    ret_fn = make_return_fn(env, spec, policy_apply, steps)
    returns = jax.jit(jax.vmap(ret_fn, in_axes=(None, None, 0)))(x, keys, policy_params)
    returns = np.asarray(returns, np.float64)
    out = []
    for r in returns:
        grid = r[:-episodes].reshape(n1, n2, episodes)
        out.append(
            GridResult(
                tuple(names), (v1, v2), grid.mean(-1), grid.std(-1), float(r[-episodes:].mean())
            )
        )
    return out


def grid_to_json(result: GridResult) -> dict[str, Any]:
    return {
        "params": list(result.names),
        "values": [v.tolist() for v in result.values],
        "returns": result.returns.tolist(),
        "returns_std": result.returns_std.tolist(),
        "nominal_return": result.nominal,
        "grid_mean": float(result.returns.mean()),
        "grid_min": float(result.returns.min()),
    }


def plot_heatmap(result: GridResult, path: str, title: str = "") -> str:
    """Heat map of the grid returns (rows: ``names[0]``, columns: ``names[1]``); returns path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow(result.returns, origin="lower", cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(result.values[1])), [f"{v:.3g}" for v in result.values[1]])
    ax.set_yticks(range(len(result.values[0])), [f"{v:.3g}" for v in result.values[0]])
    ax.set_xlabel(result.names[1])
    ax.set_ylabel(result.names[0])
    for (i, j), v in np.ndenumerate(result.returns):
        ax.text(j, i, f"{v:.0f}", ha="center", va="center", color="w", fontsize=7)
    fig.colorbar(im, ax=ax, label="return")
    ax.set_title(title or "return over perturbed dynamics")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# The policies of a run (loaded by the registry in adarl.loaders)
# ---------------------------------------------------------------------------------------------


class RunPolicies(NamedTuple):
    """The policies of every seed of one run directory.

    params: pytree with a leading seed axis (S, ...); apply: ``(params_s, obs (..., O)) ->
    deterministic action (..., A)`` in [-1, 1]; config: the run's ConfigDict; num_seeds: S.
    """

    params: Any
    apply: Callable[[Any, jax.Array], jax.Array]
    config: Any
    num_seeds: int


# ---------------------------------------------------------------------------------------------
# Statistics and the comparison table
# ---------------------------------------------------------------------------------------------


TRAIN_GRID_FILE = "robustness.json"  # the trainer's own end-of-run grid (adarl.evaluate)
SUMMARY_FILE = "summary.json"  # harness.run_experiment's summary (wall_time_s)


def grid_cvar(returns: Any, alpha: float = 0.1) -> float:
    """Lower-tail CVaR over the cells of one seed's grid: the mean of the worst
    ``ceil(alpha · cells)`` cell returns (25 cells, alpha 0.1: the worst 3)."""
    r = np.sort(np.asarray(returns, np.float64).ravel())
    return float(r[: max(1, math.ceil(alpha * r.size))].mean())


class Source(NamedTuple):
    """Where a table metric is read: ``file`` in the run directory, a key ``path`` into its
    JSON, and an optional ``transform`` of the value found (to per-seed values)."""

    file: str
    path: tuple[str, ...]
    transform: Callable[[Any], Any] | None = None


class Metric(NamedTuple):
    """A table column: its sources, tried in order (the first file present wins); a required
    metric missing from a run is an error in :func:`missing`, an optional one is ``n/a``."""

    sources: tuple[Source, ...]
    required: bool = True


METRICS: dict[str, Metric] = {
    # The wind tunnel's grid (robust_eval.json) wins; without it, the trainer's own grid.
    "nominal": Metric(
        (Source(ROBUST_FILE, ("nominal_return",)), Source(TRAIN_GRID_FILE, ("nominal",)))
    ),
    "grid_mean": Metric(
        (Source(ROBUST_FILE, ("grid_mean",)), Source(TRAIN_GRID_FILE, ("grid_mean",)))
    ),
    "grid_cvar10": Metric(
        (
            Source(ROBUST_FILE, ("per_seed",), lambda ps: [grid_cvar(p["returns"]) for p in ps]),
            Source(TRAIN_GRID_FILE, ("grid",), lambda gs: [grid_cvar(g) for g in gs]),
        ),
        required=False,
    ),
    "worst_case": Metric((Source("windtunnel.json", ("worst_return",)),)),
    "actor_rank": Metric(
        (Source(TRAIN_GRID_FILE, ("final_ranks", "rank/actor_0")),), required=False
    ),
    "wall_s": Metric((Source(SUMMARY_FILE, ("wall_time_s",)),), required=False),
}


def read_metric(workdir: str, metric: Metric) -> list[float] | None:
    """Per-seed values of ``metric`` in one run directory (a scalar counts once), or None when
    no source file holds it."""
    for src in metric.sources:
        path = os.path.join(workdir, src.file)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            value = json.load(f)
        for key in src.path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        if src.transform is not None:
            value = src.transform(value)
        return [float(v) for v in value] if isinstance(value, list) else [float(value)]
    return None


def collect(runs: Mapping[str, Sequence[str]]) -> dict[str, dict[str, list[float]]]:
    """algo -> metric -> per-seed values read from each run's JSON files (missing: skipped).

    A field may hold one value or a list (one per vmapped seed of the run)."""
    out: dict[str, dict[str, list[float]]] = {}
    for algo, workdirs in runs.items():
        table = out.setdefault(algo, {m: [] for m in METRICS})
        for wd in workdirs:
            for name, metric in METRICS.items():
                table[name].extend(read_metric(wd, metric) or [])
    return out


def missing(runs: Mapping[str, Sequence[str]]) -> list[str]:
    """``"DIR: FILE (metric, ...)"`` for every run directory lacking a file :data:`METRICS` reads."""
    out = []
    for workdirs in runs.values():
        for wd in workdirs:
            absent: dict[str, list[str]] = {}
            for name, metric in METRICS.items():
                if metric.required and read_metric(wd, metric) is None:
                    absent.setdefault(metric.sources[0].file, []).append(name)
            out.extend(f"{wd}: no {f} ({', '.join(m)})" for f, m in absent.items())
    return out


def compare(runs: Mapping[str, Sequence[str]], *, reps: int = 2000, seed: int = 0):
    """Summary per algorithm and metric: n, IQM, 95% bootstrap CI of the IQM, mean, std.

    Returns (rows: dict algo -> metric -> stats dict, markdown table string).
    """
    data = collect(runs)
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for algo, metrics in data.items():
        rows[algo] = {}
        for metric, values in metrics.items():
            v = np.asarray(values, np.float64)
            lo, hi = bootstrap_ci(v, reps=reps, seed=seed) if v.size else (np.nan, np.nan)
            rows[algo][metric] = {
                "n": int(v.size),
                "iqm": iqm(v) if v.size else float("nan"),
                "ci_low": lo,
                "ci_high": hi,
                "mean": float(v.mean()) if v.size else float("nan"),
                "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
            }
    header = (
        "| algo | seeds | " + " | ".join(f"{m} IQM [95% CI] (mean ± std)" for m in METRICS) + " |"
    )
    lines = [header, "|" + "---|" * (len(METRICS) + 2)]
    for algo, metrics in rows.items():
        cells = []
        for m in METRICS:
            s = metrics[m]
            if s["n"] == 0:
                cells.append("n/a")
            elif s["n"] == 1:
                cells.append(f"{s['mean']:.1f}")
            else:
                cells.append(
                    f"{s['iqm']:.1f} [{s['ci_low']:.1f}, {s['ci_high']:.1f}] "
                    f"({s['mean']:.1f} ± {s['std']:.1f})"
                )
        n = max(metrics[m]["n"] for m in METRICS if METRICS[m].required)
        lines.append(f"| {algo} | {n} | " + " | ".join(cells) + " |")
    return rows, "\n".join(lines)
