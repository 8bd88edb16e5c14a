"""Config checking shared by every library package: one error type, field checks, presets.

Trainers call these before building anything that compiles, so a bad value stops the command
with one line naming the dotted field and the allowed values (no traceback from JAX).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

# ---------------------------------------------------------------------------------------------


class ConfigError(ValueError):
    """A config field is unknown, of the wrong kind, or out of its allowed range."""


_MISSING = object()


def _get_field(config: Any, field: str) -> Any:
    node = config
    for part in field.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, AttributeError):
            node = getattr(node, part, _MISSING)
        if node is _MISSING:
            raise ConfigError(f"config field '{field}' is missing (no '{part}')")
    return node


def check_choice(config: Any, field: str, allowed: Iterable[Any]) -> Any:
    """Checks that ``config.<field>`` is one of ``allowed``; returns the value."""
    allowed = tuple(allowed)
    value = _get_field(config, field)
    if value not in allowed:
        raise ConfigError(
            f"config.{field}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}"
        )
    return value


def check_range(
    config: Any,
    field: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_inclusive: bool = True,
    hi_inclusive: bool = True,
) -> float:
    """Checks that ``config.<field>`` is a finite number inside [lo, hi] (or open ends)."""
    value = _get_field(config, field)
    lb = "[" if lo_inclusive else "("
    ub = "]" if hi_inclusive else ")"
    interval = f"{lb}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{ub}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ConfigError(f"config.{field}={value!r} must be a number in {interval}")
    ok = math.isfinite(float(value))
    if lo is not None:
        ok &= value >= lo if lo_inclusive else value > lo
    if hi is not None:
        ok &= value <= hi if hi_inclusive else value < hi
    if not ok:
        raise ConfigError(f"config.{field}={value!r} is out of range; allowed: {interval}")
    return value


def check_int(config: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
    """Checks that ``config.<field>`` is an integer inside [lo, hi]."""
    value = _get_field(config, field)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"config.{field}={value!r} must be an integer")
    check_range(config, field, lo, hi)
    return int(value)


def select_preset(presets: Mapping[str, Callable[[], Any]], name: str | None) -> Any:
    """Returns ``presets[name]()``; an unknown name raises with the list of presets."""
    if name is None or name == "":
        name = "default" if "default" in presets else next(iter(presets))
    if name not in presets:
        raise ConfigError(
            f"unknown preset '{name}'; choose one of {', '.join(sorted(presets))} "
            "(as --config path/to/config.py:<preset>)"
        )
    return presets[name]()
