"""Round-loop callbacks: what happens around the rounds without growing the runner.

A callback overrides any of the hooks below; the runner calls them in order. Built-ins cover
checkpoints, plots, early stopping and progress; plugins add their own (trackers,
notifications, influence hooks) with ``register_callback(factory)``, where ``factory(config)``
returns a callback for runs that want it (or None), so a new one touches no package file.

A hook sees the run through ``RunView``: the few things of the runner that callbacks read
(config, run directory, rounds done, history, totals), so this module and every callback host
depend on that small protocol, not on the runner. The built-in callback modules
(``BUILTIN_CALLBACKS``) are imported by the first ``configured_callbacks`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from fedweave.config import Config
    from fedweave.core.rounds import RoundResult


class RunFolder(Protocol):
    """The run directory as callbacks use it (``fedweave.records.rundir.RunDirectory``)."""

    @property
    def path(self) -> Path: ...

    @property
    def nodes_dir(self) -> Path: ...

    def write_json(self, name: str, data: Any) -> None: ...

    def write_summary(self, summary: dict[str, Any]) -> None: ...


class RunResult(Protocol):
    """What a finished run returns (``fedweave.runner.Result``): summary.json's content."""

    @property
    def summary(self) -> dict[str, Any]: ...


class RunView(Protocol):
    """The run as a callback sees it (``fedweave.runner.Runner`` is one).

    ``algo`` is the run's algorithm (``fedweave.algorithms.base.Algorithm``) and ``ctx`` its
    context (``fedweave.context.RunContext``): callbacks that need an algorithm's own facts
    (a privacy ledger, client densities) look them up with ``getattr``."""

    @property
    def config(self) -> Config: ...

    @property
    def run_dir(self) -> RunFolder | None: ...

    @property
    def start_round(self) -> int:
        """Rounds done before this process started (a resume)."""

    @property
    def history(self) -> list[dict[str, float]]:
        """One summary row per evaluated round."""

    @property
    def totals(self) -> dict[str, Any]:
        """bytes_up, bytes_down, sim_time_s, wall_s so far."""

    @property
    def best(self) -> dict[str, float]:
        """The best evaluated row so far (by validation accuracy)."""

    @property
    def last_rows(self) -> dict[str, dict[str, float]]:
        """The last evaluation, per evaluated model."""

    @property
    def algo(self) -> Any: ...

    @property
    def ctx(self) -> Any: ...


class Callback:
    """Hooks of one run; every one is optional."""

    def on_start(self, runner: RunView) -> None:
        """After the run directory and the algorithm exist (also on resume)."""

    def on_round(self, runner: RunView, r: int, result: RoundResult) -> None:
        """After every round ``r`` (0-based), before evaluation."""

    def on_evaluate(self, runner: RunView, r: int, row: dict[str, Any]) -> None:
        """After an evaluated round: ``row`` is the summary row (train/val/test metrics)."""

    def on_checkpoint(self, runner: RunView, r: int) -> None:
        """After the checkpoint of round ``r`` was written."""

    def should_stop(self, runner: RunView) -> bool:
        """True ends the run after the current round (early stopping)."""
        return False

    def on_finish(self, runner: RunView, result: RunResult) -> None:
        """After summary.json was written."""

    def on_failure(self, runner: RunView, exc: BaseException) -> None:
        """The run stopped with ``exc`` (also ``KeyboardInterrupt``)."""


CallbackFactory = Callable[["Config"], "Callback | None"]
CALLBACK_FACTORIES: list[CallbackFactory] = []
#: modules whose import registers the built-in callback factories
BUILTIN_CALLBACKS = ("fedweave.records.callbacks", "fedweave.records.notify",
                     "fedweave.records.trackers", "fedweave.privacy.budget")


def register_callback(factory: CallbackFactory) -> CallbackFactory:
    """Add a factory ``config -> Callback | None`` consulted by every run."""
    CALLBACK_FACTORIES.append(factory)
    return factory


def configured_callbacks(config: Config) -> list[Callback]:
    """The callbacks every registered factory makes for ``config`` (built-ins first)."""
    for module in BUILTIN_CALLBACKS:
        import_module(module)
    out = []
    for factory in CALLBACK_FACTORIES:
        cb = factory(config)
        if cb is not None:
            out.append(cb)
    return out
