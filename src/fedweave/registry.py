"""Name → object registries that users extend (datasets, models, algorithms, topologies).

A registry knows its built-in names without importing them: ``modules`` maps each built-in
name to the module that registers it, and ``get(name)`` imports that module on first use. So a
run imports the one algorithm, model and dataset its config names, and ``names()`` lists every
choice (built-in or registered by a plugin) without importing any. A plugin registers its own
names with ``register`` when it is imported, as before. A built-in module that the table does
not list yet is still found: on a miss, ``get`` imports every module of the registry's
``packages`` (so a new algorithm is one new file; its table entry only spares that scan).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import import_module
from pkgutil import iter_modules
from typing import Generic, TypeVar

from fedweave.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; ``register`` is usable as a decorator. ``modules``: built-in name →
    the dotted module whose import registers it (imported by ``get`` on first use)."""

    def __init__(self, kind: str, modules: Mapping[str, str] | None = None,
                 packages: Sequence[str] = ()) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self.modules: dict[str, str] = dict(modules or {})
        #: packages whose modules are all imported when a name is in neither table
        self.packages = tuple(packages)

    def register(self, name: str, override: bool = False) -> Callable[[T], T]:
        """Decorator adding ``obj`` as ``name``. A name another module registered (a
        built-in) is refused unless ``override=True``: a plugin never replaces a built-in
        silently."""

        def add(obj: T) -> T:
            old = self._items.get(name)
            mine, theirs = getattr(obj, "__module__", None), getattr(old, "__module__", None)
            if old is not None and old is not obj and mine != theirs and not override:
                raise UserError(f"{mine or 'a plugin'} registers {self.kind} {name!r}, which "
                                f"{theirs or 'another module'} already provides; choose another "
                                "name, or pass override=True to replace it")
            self._items[name] = obj
            return obj

        return add

    def load(self, name: str) -> bool:
        """Import the built-in module of ``name`` if it is not registered yet (a name missing
        from ``modules`` is looked for in every module of ``packages``); whether the name is
        registered afterwards."""
        if name not in self._items and name in self.modules:
            import_module(self.modules[name])
        if name not in self._items and self.packages:
            self._import_packages()
        return name in self._items

    def load_all(self) -> None:
        """Import every built-in module (listings that need the objects themselves)."""
        for module in dict.fromkeys(self.modules.values()):
            import_module(module)
        self._import_packages()

    def _import_packages(self) -> None:
        for package in self.packages:
            path = import_module(package).__path__
            for info in iter_modules(path):
                import_module(f"{package}.{info.name}")

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
