"""Synthetic sweeps with planted truth (SAFETY_AND_ANALYSIS.md §2.2 tests)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from hypotheses import types as T


def planted_table(rng: np.random.Generator, n: int = 16, d_a: float = 1.0, d_ac: float = 1.5,
                  noise: float = 1.0) -> pd.DataFrame:  # fmt: skip
    """Factors A, B, C (two levels each, crossed, ``n`` seeds per cell); metric
    ``y = d_a * A + d_ac * A * C + noise``: a true effect of A, a null B, an A x C interaction;
    metric ``z`` is pure noise."""
    rows = []
    for a, b, c in itertools.product((0, 1), repeat=3):
        for s in range(n):
            y = d_a * a + d_ac * a * c + noise * rng.normal()
            rows.append({"A": f"a{a}", "B": f"b{b}", "C": f"c{c}", "seed": str(s),
                         "run_id": f"run_a{a}b{b}c{c}#{s}", "run_dir": f"/runs/a{a}b{b}c{c}",
                         "y": y, "z": rng.normal()})  # fmt: skip
    return pd.DataFrame(rows)


def null_tables(rng: np.random.Generator, sweeps: int, n: int = 4) -> list[pd.DataFrame]:
    """``sweeps`` null sweeps (A: 2 levels x B: 3 levels, ``n`` seeds, metric y), drawn in one
    vectorised call."""
    cells = list(itertools.product(("a0", "a1"), ("b0", "b1", "b2"), range(n)))
    values = rng.normal(size=(sweeps, len(cells)))
    base = pd.DataFrame(cells, columns=["A", "B", "seed"])
    base["seed"] = base["seed"].map(str)
    base["run_id"] = base["A"] + base["B"] + "#" + base["seed"]
    base["run_dir"] = "/runs/" + base["A"] + base["B"]
    return [base.assign(y=v) for v in values]


def sweep(df: pd.DataFrame, factors=("A", "B", "C")) -> T.Sweep:
    cols = tuple(c for c in factors if c in df.columns)
    return T.Sweep("planted", df, cols)


def two_protocol_sweep(grid_episodes_differ: bool = False) -> T.Sweep:
    """Two presets of one environment: an evaluation grid and a learning-rate schedule that
    change together (as ``cpu`` and ``cpu_robust``), each crossing three algorithms x 3 seeds;
    the wide grid lowers the grid minimum by 300 whatever the algorithm."""
    rng = np.random.default_rng(0)
    rows = []
    for preset, (grid, schedule, offset) in {
        "cpu": ((0.5, 1.0, 2.0), "constant", 0.0),
        "cpu_robust": ((0.25, 1.0, 4.0), "cosine", -300.0),
    }.items():
        for algo in ("adarl", "parseval", "sac"):
            for seed in range(3):
                rows.append({"env.name": "Cartpole", "eval.grid_scales": grid,
                             "eval.num_episodes": 4 if grid_episodes_differ and offset else 10,
                             "sac.lr_schedule": schedule, "rl.algo": algo, "seed": str(seed),
                             "run_id": f"{preset}/{algo}/{seed}", "run_dir": preset,
                             "robust/grid_min": 500 + offset + rng.normal(0, 5)})  # fmt: skip
    table = pd.DataFrame(rows)
    cols = ("env.name", "eval.grid_scales", "eval.num_episodes", "sac.lr_schedule", "rl.algo")
    return T.Sweep("robust", table, cols)
