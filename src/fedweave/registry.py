"""Name → object registries that users extend (datasets, models, algorithms, topologies).

A registry knows its built-in names without importing them: ``modules`` maps each built-in
name to the module that registers it, and ``get(name)`` imports that module on first use. So a
run imports the one algorithm, model and dataset its config names, and ``names()`` lists every
choice (built-in or registered by a plugin) without importing any. A plugin registers its own
names with ``register`` when it is imported, as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from importlib import import_module
from typing import Generic, TypeVar

from fedweave.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; ``register`` is usable as a decorator. ``modules``: built-in name →
    the dotted module whose import registers it (imported by ``get`` on first use)."""

    def __init__(self, kind: str, modules: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self.modules: dict[str, str] = dict(modules or {})

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            self._items[name] = obj
            return obj

        return add

    def load(self, name: str) -> bool:
        """Import the built-in module of ``name`` if it is not registered yet; whether the
        name is registered afterwards."""
        if name not in self._items and name in self.modules:
            import_module(self.modules[name])
        return name in self._items

    def load_all(self) -> None:
        """Import every built-in module (listings that need the objects themselves)."""
        for module in dict.fromkeys(self.modules.values()):
            import_module(module)

    def get(self, name: str) -> T:
        if not self.load(name):
            choices = ", ".join(self.names())
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {choices}")
        return self._items[name]

    def names(self) -> list[str]:
        """Every name, built-in or registered, none imported."""
        return sorted({*self._items, *self.modules})

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self.modules

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
