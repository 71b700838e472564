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

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
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
