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


@dataclass
class StageContext:
    """What a stage function gets: its folder, whether it is resuming, earlier summaries."""

    pipeline: Pipeline
    name: str
    dir: Path
    resume: bool
    results: dict[str, dict[str, Any]]


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
            for stage in self.stages:
                if stage.name in results:
                    continue
                resume = self.status.get(stage.name, {}).get("status") == "running"
                self.status[stage.name] = {"status": "running", "started": time.time()}
                self._write()
                t0 = time.perf_counter()
                summary = stage.run(StageContext(self, stage.name, self.root / stage.name,
                                                 resume, results))
                results[stage.name] = summary
                self.status[stage.name] = {"status": "done", "summary": summary,
                                           "wall_s": time.perf_counter() - t0}
                self._write()
            atomic_write(self.root / "summary.json", json.dumps(
                {"stages": results, "wall_s": {n: s.get("wall_s") for n, s in
                                               self.status.items()}}, indent=2, default=str))
            return results
        finally:
            lock.release()


def train_stage(sc: StageContext, config: Config, data: FederatedData | None = None,
                callbacks: Iterable[Callback] = ()) -> Result:
    """Run (or resume) one training run in the stage's folder."""
    from fedweave.records.rundir import RunDirectory

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
