"""Stop a run cleanly on SIGINT (Ctrl-C) or SIGTERM (``kill``, Slurm's time limit, ``docker
stop``): the round in progress finishes, a final checkpoint is written, and ``Interrupted``
is raised, naming the last completed round, so ``fedweave run --resume DIR`` continues to the
numbers of an uninterrupted run. A second signal stops at once (the checkpoint of the last
completed checkpoint round stays valid). Handlers are installed only in the main thread of a
single-process run (the ranks of a distributed run cannot agree on the round to stop at).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from fedweave.callbacks import Callback

if TYPE_CHECKING:
    from fedweave.callbacks import RunResult, RunView

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """A run stopped by a signal between rounds."""

    def __init__(self, signum: int, completed: int, run_dir: Path | None,
                 checkpointed: bool) -> None:
        name = signal.Signals(signum).name
        super().__init__(f"{name} after round {completed}")
        self.signum, self.completed, self.run_dir = signum, completed, run_dir
        self.checkpointed = checkpointed

    @property
    def exit_code(self) -> int:
        """128 + signal number, as shells report it (130 for SIGINT, 143 for SIGTERM)."""
        return 128 + self.signum


class Signalled(Exception):
    """SIGINT/SIGTERM outside a training run's rounds (scoring, synthesis): raised at once
    where the main thread is (``stop_at_once``); the stage resumes from its own records."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_at_once() -> Iterator[None]:
    """Within the block the first SIGINT/SIGTERM raises ``Signalled`` (a training stage's
    ``StopOnSignal`` takes over during its rounds and stops after the round instead)."""
    def handle(signum: int, frame: FrameType | None) -> None:
        raise Signalled(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def signal_name(exc: BaseException) -> str:
    """The signal behind ``Interrupted``, ``Signalled`` or ``KeyboardInterrupt``."""
    if isinstance(exc, Interrupted | Signalled):
        return signal.Signals(exc.signum).name
    return "SIGINT"


class StopOnSignal(Callback):
    """Turns SIGINT/SIGTERM into a stop after the current round, with a checkpoint."""

    def __init__(self, notice: Any = None) -> None:
        self.signum: int | None = None
        self.round = 0
        self.notice = notice  # called with the signal name when the first signal arrives
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:  # second signal: stop now
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.raise_signal(signum)
            return
        self.signum = signum
        if self.notice is not None:
            self.notice(signal.Signals(signum).name)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_start(self, runner: RunView) -> None:
        comm = runner.ctx.comm
        if threading.current_thread() is not threading.main_thread() or \
                (comm is not None and comm.world > 1):
            return
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)

    def on_round(self, runner: RunView, r: int, result: Any) -> None:
        self.round = r + 1

    def should_stop(self, runner: RunView) -> bool:
        if self.signum is None:
            return False
        if runner.run_dir is None or not runner.config.output.checkpoint_every:
            where = runner.run_dir.path if runner.run_dir is not None else None
            raise Interrupted(self.signum, self.round, where, checkpointed=False)
        return True  # the runner writes the checkpoint of this round, then on_checkpoint

    def on_checkpoint(self, runner: RunView, r: int) -> None:
        if self.signum is not None:
            where = runner.run_dir.path if runner.run_dir is not None else None
            raise Interrupted(self.signum, r + 1, where, checkpointed=True)

    def on_finish(self, runner: RunView, result: RunResult) -> None:
        self._restore()

    def on_failure(self, runner: RunView, exc: BaseException) -> None:
        self._restore()
