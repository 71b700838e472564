"""Round-loop callbacks: what happens around the rounds without growing the runner.

A callback overrides any of the hooks below; the runner calls them in order. Built-ins cover
checkpoints, plots, early stopping and progress; plugins add their own (trackers,
notifications, influence hooks) with ``register_callback(factory)``, where ``factory(config)``
returns a callback for runs that want it (or None), so a new one touches no package file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedweave.algorithms.base import RoundResult
    from fedweave.config import Config
    from fedweave.runner import Result, Runner


class Callback:
    """Hooks of one run; every one is optional."""

    def on_start(self, runner: Runner) -> None:
        """After the run directory and the algorithm exist (also on resume)."""

    def on_round(self, runner: Runner, r: int, result: RoundResult) -> None:
        """After every round ``r`` (0-based), before evaluation."""

    def on_evaluate(self, runner: Runner, r: int, row: dict[str, Any]) -> None:
        """After an evaluated round: ``row`` is the summary row (train/val/test metrics)."""

    def on_checkpoint(self, runner: Runner, r: int) -> None:
        """After the checkpoint of round ``r`` was written."""

    def should_stop(self, runner: Runner) -> bool:
        """True ends the run after the current round (early stopping)."""
        return False

    def on_finish(self, runner: Runner, result: Result) -> None:
        """After summary.json was written."""

    def on_failure(self, runner: Runner, exc: BaseException) -> None:
        """The run stopped with ``exc`` (also ``KeyboardInterrupt``)."""


CallbackFactory = Callable[["Config"], "Callback | None"]
CALLBACK_FACTORIES: list[CallbackFactory] = []


def register_callback(factory: CallbackFactory) -> CallbackFactory:
    """Add a factory ``config -> Callback | None`` consulted by every run."""
    CALLBACK_FACTORIES.append(factory)
    return factory


def configured_callbacks(config: Config) -> list[Callback]:
    out = []
    for factory in CALLBACK_FACTORIES:
        cb = factory(config)
        if cb is not None:
            out.append(cb)
    return out
