"""A name -> object table: the one source of names for validators, loaders and CLIs.

Every library registry (environments, samplers, rank rules, scan back-ends, algorithms, layer
types) is a :class:`Registry`, so a config check reads the allowed names from the table itself
(:meth:`Registry.names`) and an unknown name raises :class:`~harness.config.ConfigError` listing
them. Registration happens where the entry is defined, at import of the defining module; a
package's ``__init__`` imports every module that registers, so the table never depends on which
module a caller happened to import first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from harness.config import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Ordered ``name -> T`` table; duplicate names raise ValueError, unknown names ConfigError."""

    def __init__(self, kind: str):
        self.kind = kind
        self._table: dict[str, T] = {}

    def add(self, name: str, obj: T) -> T:
        """Registers ``obj`` under ``name``; a second entry with the same name raises ValueError."""
        if name in self._table:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._table[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""
        return lambda obj: self.add(name, obj)

    def get(self, name: str, field: str | None = None) -> T:
        """The entry for ``name``; an unknown name raises ConfigError naming ``field`` if given."""
        if name not in self._table:
            where = f"config.{field}={name!r}" if field else f"{self.kind} {name!r}"
            raise ConfigError(f"{where} is not registered; choose one of {', '.join(self._table)}")
        return self._table[name]

    def names(self) -> tuple[str, ...]:
        """Registered names in registration order."""
        return tuple(self._table)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._table.items())

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)
