"""Multi-stage runs: a pipeline of named stages under one run directory, resumable per stage.

```
runs/<name>-<timestamp>/
  config.yaml      the pipeline's resolved config
  pipeline.json    {"stages": {name: {"status": "running" | "done", "summary": {...}}}}
  summary.json     every stage's summary, once the pipeline is done
  <stage>/         each stage's own records (a training stage: a full run directory)
```

Stages run in order; a finished stage is never run again, the stage that was running when the
pipeline was killed resumes from its own checkpoint (``StageContext.resume``), later stages
start fresh. The root folder is locked for the pipeline's lifetime. Examples: train → score →
prune → retrain (data influence), teachers → synthesize → student (one-shot distillation).

What a command shows while the stages run goes through ``Pipeline.listener`` (a
``StageListener``: the pipeline's folder first, each stage's start, steps and end; the CLI's
``fedweave.cli.progress.PipelineProgress`` prints them) and ``Pipeline.callbacks`` (run
callbacks given to every training stage: the round bar or lines, the stop on SIGINT/SIGTERM).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedweave.callbacks import Callback
from fedweave.config import Config, dump_config
from fedweave.data.federated import FederatedData
from fedweave.errors import UserError
from fedweave.records.files import field as record_field
from fedweave.records.files import read_json
from fedweave.records.lock import DirectoryLock
from fedweave.records.rundir import atomic_write, new_run_folder
from fedweave.runner import Result, Runner, resume_config

STATE_FILE = "pipeline.json"


class StageListener:
    """Hears a pipeline's progress; every method does nothing by default."""

    def pipeline_start(self, root: Path, stages: list[str], done: list[str],
                       resumed: bool = False) -> None:
        """Before the first stage: the folder, every stage's name, those already done and
        whether an earlier invocation started this pipeline."""

    def stage_start(self, name: str, index: int, total: int, resume: bool) -> None:
        """Stage ``index`` (1-based) of ``total`` begins (``resume``: it was interrupted)."""

    def stage_step(self, name: str, done: int, total: int, text: str = "") -> None:
        """``done`` of the stage's ``total`` steps (batches, epochs, ...) are finished."""

    def stage_done(self, name: str, seconds: float) -> None:
        """The stage finished in ``seconds``."""


@dataclass
class StageContext:
    """What a stage function gets: its folder, whether it is resuming, earlier summaries."""

    pipeline: Pipeline
    name: str
    dir: Path
    resume: bool
    results: dict[str, dict[str, Any]]

    def step(self, done: int, total: int, text: str = "") -> None:
        """Report ``done`` of ``total`` steps of this stage to the pipeline's listener."""
        self.pipeline.listener.stage_step(self.name, done, total, text)


@dataclass
class Stage:
    """A named step; ``run`` returns the stage's summary (JSON-serialisable)."""

    name: str
    run: Callable[[StageContext], dict[str, Any]]


@dataclass
class Pipeline:
    root: Path
    stages: Sequence[Stage]
    config: Config | None = None
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: what the stages report to (a command's progress display)
    listener: StageListener = field(default_factory=StageListener)
    #: run callbacks every training stage gets (progress, stop on a signal)
    callbacks: list[Callback] = field(default_factory=list)

    @classmethod
    def create(cls, config: Config, stages: Sequence[Stage], kind: str = "pipeline"
               ) -> Pipeline:
        """A new ``<output.dir>/<name>-<timestamp>`` for ``config``."""
        path = new_run_folder(config)
        atomic_write(path / "config.yaml", dump_config(config))
        pipe = cls(path, stages, config)
        pipe._write({"kind": kind, "stages": {}})
        return pipe

    @classmethod
    def open(cls, root: Path, stages: Sequence[Stage]) -> Pipeline:
        state = root / STATE_FILE
        if not state.is_file():
            raise UserError(f"--resume {root}: not a pipeline run directory (no {STATE_FILE})")
        status = record_field(read_json(state, "start a new run"), "stages", dict, state,
                              "start a new run")
        if not all(isinstance(s, dict) for s in status.values()):
            raise UserError(f"{state}: damaged (a stage's record is not an object); start a "
                            "new run")
        return cls(root, stages, None, status)

    def _write(self, extra: dict[str, Any] | None = None) -> None:
        data = {"stages": self.status, **(extra or {})}
        old = self.root / STATE_FILE
        if extra is None and old.is_file():
            data = {**json.loads(old.read_text()), "stages": self.status}
        atomic_write(old, json.dumps(data, indent=2))

    def run(self) -> dict[str, Any]:
        """Run the stages that are not done; returns {stage: summary}."""
        lock = DirectoryLock(self.root, "pipeline run directory").acquire()
        try:
            results = {name: s["summary"] for name, s in self.status.items()
                       if s.get("status") == "done"}
            self.listener.pipeline_start(self.root, [s.name for s in self.stages],
                                         [s.name for s in self.stages if s.name in results],
                                         bool(self.status))
            for index, stage in enumerate(self.stages, 1):
                if stage.name in results:
                    continue
                resume = self.status.get(stage.name, {}).get("status") == "running"
                self.status[stage.name] = {"status": "running", "started": time.time()}
                self._write()
                self.listener.stage_start(stage.name, index, len(self.stages), resume)
                t0 = time.perf_counter()
                summary = stage.run(StageContext(self, stage.name, self.root / stage.name,
                                                 resume, results))
                results[stage.name] = summary
                seconds = time.perf_counter() - t0
                self.status[stage.name] = {"status": "done", "summary": summary,
                                           "wall_s": seconds}
                self._write()
                self.listener.stage_done(stage.name, seconds)
            atomic_write(self.root / "summary.json", json.dumps(
                {"stages": results, "wall_s": {n: s.get("wall_s") for n, s in
                                               self.status.items()}}, indent=2, default=str))
            return results
        finally:
            lock.release()


def train_stage(sc: StageContext, config: Config, data: FederatedData | None = None,
                callbacks: Iterable[Callback] = ()) -> Result:
    """Run (or resume) one training run in the stage's folder (with the pipeline's run
    callbacks: progress, stop on a signal)."""
    from fedweave.records.rundir import RunDirectory

    callbacks = [*callbacks, *sc.pipeline.callbacks]
    if sc.resume and (sc.dir / "config.yaml").is_file():
        run_dir = RunDirectory.open(sc.dir)
        try:
            cfg, ckpt = resume_config(run_dir, [])
            runner = Runner(cfg, run_dir, callbacks, data=data,
                            backend=ckpt[2].get("backend") if ckpt else None)
            runner.resume(ckpt)
            return runner.run()
        finally:
            run_dir.lock.release()
    runner = Runner(config, None, callbacks, data=data)
    runner.run_dir = RunDirectory.create(config, at=sc.dir)
    try:
        return runner.run()
    finally:
        runner.run_dir.lock.release()
