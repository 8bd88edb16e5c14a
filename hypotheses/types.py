"""Typed records of the sweep-to-hypothesis pipeline (SAFETY_AND_ANALYSIS.md §2.2-2.4).

Every record is a frozen dataclass of plain values (str, int, float, tuples) so it serialises to
JSON and back without loss, and every number a hypothesis states points back to one ``Relation``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pandas as pd

# Relation types (edge types of the relation graph, §2.2).
INCREASES = "increases"
DECREASES = "decreases"
NO_EFFECT = "no_detectable_effect"
INTERACTS = "interacts_with"
MODULATES = "modulates"
NONE = "none"  # tested, nothing supported: the direction stays an open question
EDGE_TYPES = (INCREASES, DECREASES, NO_EFFECT, INTERACTS, MODULATES)

# Direction designs (which tools apply, §2.2 Module 2).
TWO_LEVEL = "two_level"
K_LEVEL = "k_level"
CONTINUOUS = "continuous"
INTERACTION = "interaction"
AGGREGATE = "aggregate"  # one factor across tasks (rliable-style normalised IQM)

# Factor kinds inferred by ``explore.infer_schema``.
BINARY, CATEGORICAL, ORDINAL, CONT = "binary", "categorical", "ordinal", "continuous"


@dataclasses.dataclass(frozen=True)
class Sweep:
    """One sweep: a per-replicate table plus where its columns came from.

    ``table`` has one row per replicate (a seed of one run): ``run_id`` (unique per row),
    ``run_dir``, ``seed`` (str), ``loader``, the flattened config columns listed in
    ``config_columns`` and one float column per metric (already aggregated over steps).
    """

    name: str
    table: pd.DataFrame
    config_columns: tuple[str, ...]
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Schema:
    """Inferred roles of the table's columns.

    ``factors`` maps a factor column to its kind (binary/categorical/ordinal/continuous);
    ``aliases`` maps a kept factor to the columns that are one-to-one with it (confounded);
    ``task`` is the environment/task column (or None); ``seed`` the replicate column.
    """

    factors: dict[str, str]
    metrics: tuple[str, ...]
    seed: str | None
    task: str | None
    aliases: dict[str, tuple[str, ...]]
    constants: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Direction:
    """A testable research direction: ``factor`` (x ``factor_b``) -> ``metric`` within ``task``."""

    design: str
    factor: str
    metric: str
    task: str  # "" when the sweep has no task column
    factor_b: str = ""
    levels: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Relation:
    """One statistical test result with full provenance (an edge candidate of the graph).

    ``effect`` is in metric units (difference ``level_b - level_a``, slope, rho or interaction
    coefficient, named by ``effect_label``); ``std_effect`` a standardised size (Cohen's d,
    Cliff's delta, rho, eta^2); ``ci_low``/``ci_high`` a 95% CI of ``effect`` (None when the
    tool gives none); ``q`` the Benjamini-Hochberg q over the sweep's family of tests.
    """

    tool: str
    tool_version: str
    design: str
    factor: str
    metric: str
    task: str
    effect: float
    effect_label: str
    std_effect: float | None
    ci_low: float | None
    ci_high: float | None
    p: float
    n: int
    run_ids: tuple[str, ...]
    level_a: str = ""
    level_b: str = ""
    factor_b: str = ""
    bound: float | None = None
    q: float | None = None
    relation: str = NONE

    @property
    def key(self) -> str:
        """Stable identity (tool, entities, task), independent of the numbers."""
        parts = (self.tool, self.factor, self.level_a, self.level_b, self.factor_b)
        return "|".join(parts + (self.metric, self.task))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["run_ids"] = list(self.run_ids)
        return d

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Relation:
        return Relation(**{**d, "run_ids": tuple(d["run_ids"])})
