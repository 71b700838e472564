"""Stop a run at a target ε (``privacy.target_epsilon``): a callback that ends the run before
the round that would take the privacy spent above the target."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from fedweave.callbacks import Callback, register_callback
from fedweave.errors import UserError

if TYPE_CHECKING:
    from fedweave.callbacks import RunView
    from fedweave.config import Config


class Ledger(Protocol):
    def next_epsilon(self) -> float: ...


def _ledger(runner: RunView) -> Ledger:
    ledger = getattr(runner.algo, "ledger", None)
    if ledger is None:  # pragma: no cover - the config refuses privacy where nothing accounts
        raise UserError(f"privacy.target_epsilon: algorithm.name={runner.config.algorithm.name} "
                        "keeps no privacy ledger")
    return ledger  # type: ignore[no-any-return]


class PrivacyBudget(Callback):
    """Ends the run after round r when round r + 1 would spend more than ``target``."""

    stop_reason = "target_epsilon"

    def __init__(self, target: float) -> None:
        self.target = target

    def should_stop(self, runner: RunView) -> bool:
        return _ledger(runner).next_epsilon() > self.target


def _budget(config: Config) -> Callback | None:
    target = config.privacy.target_epsilon
    return PrivacyBudget(target) if config.privacy.active() and target is not None else None


register_callback(_budget)
