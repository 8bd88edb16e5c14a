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
