"""Name → object registries that users extend (datasets, models, algorithms, topologies)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from fedweave.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection; ``register`` is usable as a decorator."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

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

    def get(self, name: str) -> T:
        if name not in self._items:
            choices = ", ".join(self.names())
            raise UserError(f"unknown {self.kind} {name!r}; choose one of: {choices}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
