"""Scoring a finished run and the two-stage prune-and-retrain pipeline (reference system 000).

``score_run(RUN_DIR, scorer)`` writes ``RUN_DIR/influence/<scorer>/``: ``scores.csv``
(``node,index,score``, global training index, higher = more helpful), ``batches.csv`` (DICE:
one row per node and step), ``meta.json`` (options, seconds, checkpoints used) and
``histogram.png`` (scores per node).

``fedweave prune`` is a ``fedweave.workflows.stages.Pipeline`` of four resumable stages:

1. ``stage1``: the config on all data, keeping every checkpoint (``output.keep: all``) so the run
   stays scorable later; with ``--scorer dice`` the DICE hook rides along (a resumed stage 1
   is scored by replay instead);
2. ``score``: ``stage1/influence/<scorer>/scores.csv``;
3. ``stage2``: the same config with ``data.prune`` = those scores, the ratio, the side kept
   and the balance (``class``: the ratio within each class of every node, the default;
   ``none``: the node's best scores whatever their class, warned when a class disappears),
   everything else identical (seeds, shuffling: a ratio of 1 reproduces stage 1 bit for bit);
4. ``compare``: ``comparison.png`` (both stages' loss and accuracy curves).

``summary.json`` adds ``stage1.final``, ``stage2.final``, ``samples_kept`` and ``wall_s`` per
stage to the pipeline's record. ``--stage1 RUN_DIR`` reuses a finished run as stage 1.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from fedweave.config import Config, config_to_dict, validate_config
from fedweave.errors import UserError
from fedweave.influence.base import SCORERS, ScoredRun, Scores
from fedweave.records.files import field, read_json
from fedweave.records.rundir import atomic_write
from fedweave.workflows.stages import Pipeline, Stage, StageContext, train_stage

OPTIONS_FILE = "prune.json"


def output_dir(run_dir: Path, scorer: str) -> Path:
    return run_dir / "influence" / scorer


def write_scores(folder: Path, scores: Scores, meta: dict[str, Any]) -> Path:
    """scores.csv (+ batches.csv), meta.json and histogram.png, atomically per file."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["node", "index", "score"])
    for n, i, s in zip(scores.node.tolist(), scores.index.tolist(), scores.score.tolist(),
                       strict=True):
        w.writerow([n, i, repr(float(s))])
    atomic_write(folder / "scores.csv", buf.getvalue())
    if scores.batches:
        keys = list(dict.fromkeys(k for row in scores.batches for k in row))
        buf = io.StringIO()
        dw = csv.DictWriter(buf, fieldnames=keys)
        dw.writeheader()
        dw.writerows(scores.batches)
        atomic_write(folder / "batches.csv", buf.getvalue())
    from fedweave.influence.plots import plot_histograms

    plot_histograms(scores, folder / "histogram.png")
    atomic_write(folder / "meta.json", json.dumps({**scores.meta, **meta}, indent=2,
                                                  default=str))
    return folder / "scores.csv"


def score(run: ScoredRun, name: str) -> tuple[Scores, float]:
    cls = SCORERS.get(name)
    if run.kind not in cls.kinds:
        raise UserError(f"scorer {name} works on {', '.join(cls.kinds)} runs; this run is "
                        f"{run.kind} (algorithm.name={run.config.algorithm.name})")
    t0 = time.perf_counter()
    out = cls().score(run)
    return out, time.perf_counter() - t0


def score_run(run_dir: Path, name: str, overrides: list[str] | None = None,
              imports: list[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Score a finished run directory into ``influence/<name>/``; returns (scores.csv, meta)."""
    SCORERS.get(name)  # an unknown name fails before the run is loaded
    run = ScoredRun.open(run_dir, overrides, imports)
    scores, seconds = score(run, name)
    meta = {"scorer": name, "seconds": seconds,
            "influence": config_to_dict(run.config)["influence"]}
    return write_scores(output_dir(run_dir, name), scores, meta), {**scores.meta, **meta}


# ---------------------------------------------------------------------- the pipeline


def stage1_config(config: Config) -> Config:
    data = config_to_dict(config)
    data["output"]["keep"] = "all"
    data["output"]["checkpoint_every"] = max(1, config.output.checkpoint_every)
    return validate_config(data)


def stage2_config(config: Config, scores: Path, ratio: float, keep: str,
                  balance: str = "class") -> Config:
    data = config_to_dict(config)
    data["data"]["prune"] = {"scores": str(scores.resolve()), "ratio": ratio, "keep": keep,
                             "balance": balance}
    return validate_config(data)


class PrunePipeline:
    """The stages of ``fedweave prune`` for one config, scorer, ratio and side kept."""

    def __init__(self, config: Config, scorer: str, ratio: float, keep: str,
                 stage1: Path | None = None, balance: str = "class") -> None:
        SCORERS.get(scorer)
        if not 0 < ratio <= 1:
            raise UserError(f"--train-ratio {ratio}: must lie in (0, 1]")
        if balance not in ("class", "none"):
            raise UserError(f"--balance {balance}: choose class or none")
        self.config, self.scorer, self.ratio, self.keep = config, scorer, ratio, keep
        self.stage1, self.balance = stage1, balance

    def options(self) -> dict[str, Any]:
        return {"scorer": self.scorer, "train_ratio": self.ratio, "keep": self.keep,
                "balance": self.balance, "stage1": str(self.stage1) if self.stage1 else None}

    def stages(self) -> list[Stage]:
        return [Stage("stage1", self.run_stage1), Stage("score", self.run_score),
                Stage("stage2", self.run_stage2), Stage("compare", self.run_compare)]

    def stage1_dir(self, sc: StageContext) -> Path:
        return self.stage1 if self.stage1 is not None else sc.pipeline.root / "stage1"

    def run_stage1(self, sc: StageContext) -> dict[str, Any]:
        if self.stage1 is not None:
            summary = self.stage1 / "summary.json"
            if not summary.is_file():
                raise UserError(f"--stage1 {self.stage1}: not a finished run (no summary.json)")
            return read_json(summary, f"run --stage1 {self.stage1} again, or train stage 1 "
                             "here (no --stage1)")
        callbacks = []
        if self.scorer == "dice" and not sc.resume:
            from fedweave.influence.dice import DiceHook

            self.hook = DiceHook()
            callbacks.append(self.hook)
        result = train_stage(sc, stage1_config(self.config), callbacks=callbacks)
        return result.summary

    def run_score(self, sc: StageContext) -> dict[str, Any]:
        run_dir = self.stage1_dir(sc)
        hook = getattr(self, "hook", None)
        if hook is not None and hook.steps:  # stage 1 ran with the DICE hook, start to end
            scores, seconds = hook.scores({"replayed": False}), 0.0
            meta = {"scorer": self.scorer, "seconds_in_stage1": True,
                    "influence": config_to_dict(self.config)["influence"]}
            path = write_scores(output_dir(run_dir, self.scorer), scores, meta)
            return {"scores": str(path), "seconds": seconds}
        path, meta = score_run(run_dir, self.scorer)
        return {"scores": str(path), "seconds": meta["seconds"]}

    def run_stage2(self, sc: StageContext) -> dict[str, Any]:
        scores = Path(sc.results["score"]["scores"])
        result = train_stage(sc, stage2_config(self.config, scores, self.ratio, self.keep,
                                               self.balance))
        return result.summary

    def run_compare(self, sc: StageContext) -> dict[str, Any]:
        from fedweave.influence.plots import plot_comparison

        root = sc.pipeline.root
        plot_comparison({"stage 1 (all data)": self.stage1_dir(sc) / "metrics.csv",
                         f"stage 2 ({self.scorer}, {self.keep} {self.ratio:g})":
                         root / "stage2" / "metrics.csv"}, root / "comparison.png")
        return {"plot": str(root / "comparison.png")}

    # ------------------------------------------------------------------ driving
    def create(self) -> Pipeline:
        pipe = Pipeline.create(self.config, self.stages(), kind="prune")
        atomic_write(pipe.root / OPTIONS_FILE, json.dumps(self.options(), indent=2))
        return pipe

    @classmethod
    def resume(cls, root: Path, imports: list[str] | None = None) -> tuple[PrunePipeline,
                                                                            Pipeline]:
        from fedweave.plugins import load_config

        opts_file = root / OPTIONS_FILE
        if not opts_file.is_file():
            raise UserError(f"--resume {root}: not a fedweave prune directory (no {OPTIONS_FILE})")
        fix = "start a new fedweave prune"
        opts = read_json(opts_file, fix)
        config = load_config(root / "config.yaml", [], imports or [])
        stage1 = Path(field(opts, "stage1", str, opts_file, fix)) if opts.get("stage1") else None
        scorer, keep = field(opts, "scorer", str, opts_file, fix), field(opts, "keep", str,
                                                                          opts_file, fix)
        ratio = field(opts, "train_ratio", float, opts_file, fix)
        balance = opts.get("balance", "none")  # directories written before balancing: none
        if keep not in ("top", "lowest") or not 0 < ratio <= 1 or balance not in ("class",
                                                                                 "none"):
            raise UserError(f"{opts_file}: damaged (keep {keep!r}, train_ratio {ratio}, "
                            f"balance {balance!r}); {fix}")
        self = cls(config, scorer, ratio, keep, stage1, balance)
        return self, Pipeline.open(root, self.stages())

    def finish(self, pipe: Pipeline, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Add the comparison's headline numbers to the pipeline's summary.json."""
        root = pipe.root
        state = field(read_json(root / "pipeline.json"), "stages", dict, root / "pipeline.json")
        kept = self._kept(root)
        summary = {"scorer": self.scorer, "train_ratio": self.ratio, "keep": self.keep,
                   "balance": self.balance,
                   "stage1": {"final": results["stage1"].get("final", {})},
                   "stage2": {"final": results["stage2"].get("final", {})},
                   "samples_kept": kept,
                   "wall_s": {n: s.get("wall_s") for n, s in state.items()},
                   "stages": results}
        atomic_write(root / "summary.json", json.dumps(summary, indent=2, default=str))
        return summary

    def _kept(self, root: Path) -> dict[str, Any]:
        from fedweave.data.federated import build_federated_data
        from fedweave.plugins import load_config

        cfg = load_config(root / "stage2" / "config.yaml")
        full = build_federated_data(cfg.data.model_copy(update={"prune": type(cfg.data.prune)()}),
                                    cfg.seed)
        pruned = build_federated_data(cfg.data, cfg.seed)
        return {"per_node": [len(s) for s in pruned.train_idx],
                "of": [len(s) for s in full.train_idx],
                "total": sum(len(s) for s in pruned.train_idx),
                "total_of": sum(len(s) for s in full.train_idx)}
