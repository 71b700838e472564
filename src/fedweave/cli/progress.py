"""What ``fedweave run`` prints while it runs: the run directory at the start, then per
evaluated round either a live bar (on a terminal) or one plain, flushed line (through a pipe,
``nohup``, Slurm: ``stderr`` is not a TTY), with seconds per round, ETA and simulated time.

The multi-stage commands (``fedweave prune``, ``distill``, ``influence``) print the same way
through ``PipelineProgress``: the run directory first, then per stage a start line, its rounds
(the same bar or lines as ``run``) or its steps (batches, epochs: a bar on a terminal, one line
per step off it) and an end line; on SIGINT/SIGTERM ``stopped`` names the stage and the command
that resumes it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column

from fedweave.callbacks import Callback
from fedweave.workflows.stages import StageListener

if TYPE_CHECKING:
    from fedweave.callbacks import RunResult, RunView


def clock(seconds: float) -> str:
    """``h:mm:ss`` (or ``m:ss``) of a duration."""
    s = round(max(seconds, 0))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _split(row: dict[str, Any], split: str) -> str:
    loss, acc = row.get(f"{split}_loss"), row.get(f"{split}_acc")
    if loss is None or acc is None:
        return ""
    return f"{split} loss {loss:.4f} acc {acc:.4f}"


def headline_text(row: dict[str, Any], headline: tuple[str, str] | None) -> str:
    """The algorithm's own headline accuracy (``Algorithm.headline``), when it is not the
    test accuracy: "per-client accuracy (...) 0.5399"."""
    if headline is None or row.get(headline[0]) is None:
        return ""
    return f"{headline[1]} {row[headline[0]]:.4f}"


def round_line(row: dict[str, Any], total: int, per_round: float, eta: float,
               headline: tuple[str, str] | None = None) -> str:
    """One evaluated round as one line (also the log format when not on a terminal)."""
    parts = [f"round {int(row['round'])}/{total}"]
    head = headline_text(row, headline)
    parts += [head] if head else []
    parts += [p for p in (_split(row, s) for s in ("train", "val", "test")) if p]
    if "test_acc_min" in row:
        parts.append(f"(nodes {row['test_acc_min']:.4f}–{row['test_acc_max']:.4f})")
    parts += [f"{per_round:.2f} s/round", f"ETA {clock(eta)}", f"sim {row['sim_time']:.1f} s"]
    return "  ".join(parts)


class TerminalProgress(Callback):
    """Prints the run directory, then the live bar or one line per evaluated round."""

    def __init__(self, console: Console, show_rounds: bool = True,
                 announce: bool = True) -> None:
        self.console, self.show_rounds, self.announce = console, show_rounds, announce
        self.live = console.is_terminal
        self.bar: Progress | None = None
        self.task: Any = None
        self.t0 = 0.0
        self.first = 0
        self.run_dir: Path | None = None

    def say(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True, markup=False)
        self.console.file.flush()

    def on_start(self, runner: RunView) -> None:
        self.t0, self.first = time.perf_counter(), runner.start_round
        if runner.run_dir is not None and self.announce:
            self.run_dir = runner.run_dir.path
            verb = f"resuming at round {runner.start_round}:" if runner.start_round \
                else "run directory:"
            self.say(f"{verb} {runner.run_dir.path}")
        if self.live and self.show_rounds:
            # the round counter keeps its width on any terminal (80 columns included); the
            # description gives way (ellipsis) and the bar and elapsed time shrink or go
            total = runner.config.rounds
            narrow = self.console.width < 120
            counter = Column(no_wrap=True, min_width=len(f"round {total}/{total}"))
            columns: list[Any] = [
                TextColumn("round {task.completed}/{task.total}", table_column=counter),
                BarColumn(bar_width=8 if narrow else 40),
                TextColumn("{task.description}", table_column=Column(
                    ratio=1, no_wrap=True, overflow="ellipsis"))]
            if not narrow:
                columns.append(TimeElapsedColumn())
            self.bar = Progress(*columns, console=self.console, transient=False,
                                expand=narrow)
            self.bar.start()
            self.task = self.bar.add_task("starting", total=runner.config.rounds,
                                          completed=runner.start_round)

    def on_evaluate(self, runner: RunView, r: int, row: dict[str, Any]) -> None:
        if not self.show_rounds:
            return
        total = runner.config.rounds
        per_round = (time.perf_counter() - self.t0) / max(r + 1 - self.first, 1)
        eta = per_round * (total - r - 1)
        headline = getattr(runner.algo, "headline", None)
        if self.bar is None:
            self.say(round_line(row, total, per_round, eta, headline))
            return
        best = runner.best
        key = best.get("selected_by", "val_acc")
        narrow = self.console.width < 120
        acc = "" if narrow else " acc"
        sep = " " if narrow else "  "
        text = f"loss {row['train_loss']:.3f}"
        if headline is not None and row.get(headline[0]) is not None:
            text += f"{sep}per-client {row[headline[0]]:.3f}"
        if "val_acc" in row:
            text += f"{sep}val{acc} {row['val_acc']:.3f}"
        text += f"{sep}test{acc} {row['test_acc']:.3f}"
        if key in best:
            text += f"{sep}best {best[key]:.3f} (r{int(best['round'])})"
        text += (f" {per_round:.2f}s/r ETA {clock(eta)}" if narrow
                 else f"  {per_round:.2f} s/round  ETA {clock(eta)}")
        self.bar.update(self.task, completed=r + 1, description=text)

    def _stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def on_finish(self, runner: RunView, result: RunResult) -> None:
        self._stop()

    def on_failure(self, runner: RunView, exc: BaseException) -> None:
        self._stop()


class PipelineProgress(StageListener):
    """What a multi-stage command prints: the run directory first, each stage's start and end,
    training stages' rounds through ``TerminalProgress`` and other stages' steps; ``callbacks``
    are what every training stage gets (the round display and the stop on a signal)."""

    def __init__(self, console: Console, command: str, show_rounds: bool = True) -> None:
        from fedweave.interrupt import StopOnSignal

        self.console, self.command = console, command
        self.rounds = TerminalProgress(console, show_rounds=show_rounds, announce=False)
        self.stop = StopOnSignal(lambda name: self.say(
            f"{name}: stopping after this round (again to stop at once)"))
        self.live = console.is_terminal
        self.root: Path | None = None
        self.stage: str | None = None
        self.index = self.total = 0
        self.bar: Progress | None = None
        self.task: Any = None

    @property
    def callbacks(self) -> list[Callback]:
        return [self.rounds, self.stop]

    def say(self, text: str) -> None:
        self.rounds.say(text)

    def pipeline_start(self, root: Path, stages: list[str], done: list[str],
                       resumed: bool = False) -> None:
        self.root = root
        self.say(f"{'resuming' if resumed else 'run directory:'} {root}")
        if len(stages) > 1:
            marks = [f"{s} (done)" if s in done else s for s in stages]
            self.say("stages: " + " → ".join(marks))

    def stage_start(self, name: str, index: int, total: int, resume: bool) -> None:
        self.stage, self.index, self.total = name, index, total
        self.say(f"[{index}/{total}] {name}" + (" (resuming)" if resume else ""))

    def stage_step(self, name: str, done: int, total: int, text: str = "") -> None:
        if not self.live:
            self.say(f"[{self.index}/{self.total}] {name} {done}/{total} {text}".rstrip())
            return
        if self.bar is None:
            self.bar = Progress(TextColumn(f"{name} {{task.completed}}/{{task.total}}"),
                                BarColumn(), TextColumn("{task.description}"),
                                TimeElapsedColumn(), console=self.console, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("", total=total)
        self.bar.update(self.task, completed=done, description=text)

    def _stop_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None

    def stage_done(self, name: str, seconds: float) -> None:
        self._stop_bar()
        self.say(f"[{self.index}/{self.total}] {name} done in {clock(seconds)}")
        self.stage = None

    def stopped(self, how: str) -> None:
        """After a signal (``how``: e.g. "SIGINT"): which stage stopped, how to resume."""
        self._stop_bar()
        self.rounds._stop()
        where = f" in stage {self.stage}" if self.stage else ""
        if self.root is None:
            self.say(f"interrupted ({how}) before the run directory was made")
            return
        self.say(f"interrupted ({how}){where} — resume with: {self.command} --resume "
                 f"{self.root}")


@contextmanager
def interruptible(progress: PipelineProgress) -> Iterator[None]:
    """Run a multi-stage command's work: on SIGINT/SIGTERM (after the round in a training
    stage, at once elsewhere) print the stage and the resume line and exit 130 / 143."""
    import typer

    from fedweave.interrupt import Interrupted, Signalled, signal_name, stop_at_once

    try:
        with stop_at_once():
            yield
    except (Interrupted, Signalled, KeyboardInterrupt) as exc:
        progress.stopped(signal_name(exc))
        code = exc.exit_code if isinstance(exc, Interrupted | Signalled) else 130
        raise typer.Exit(code) from None
