"""Runs an experiment: builds data, model and algorithm from the config, loops over rounds,
evaluates, writes the run directory, checkpoints and resumes (DESIGN §4–5)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedweave import __version__
from fedweave.algorithms import ALGORITHMS
from fedweave.algorithms.base import Algorithm, RoundResult, RunContext
from fedweave.config import Config, load_config
from fedweave.data.federated import FederatedData, build_federated_data
from fedweave.engine import distribute, is_writer, under_torchrun
from fedweave.errors import DivergenceError, UserError
from fedweave.models import build_model
from fedweave.population import ParamLayout, flat_params, model_buffers
from fedweave.records.rundir import RunDirectory
from fedweave.rng import derive_seed
from fedweave.training.engines import make_gradient_engine, resolve_device, typical_cohort


@dataclass
class Result:
    """What ``fedweave.run`` returns: the run directory, summary.json's content and the
    per-round history (one dict per evaluated round)."""

    run_dir: Path | None
    summary: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    algorithm: Algorithm | None = None


def build_context(config: Config, data: FederatedData | None = None) -> RunContext:
    """Data, initial model (seeded from (seed, "init")) and engine for ``config``."""
    if config.engine.threads:
        torch.set_num_threads(config.engine.threads)
    device = resolve_device(config.engine.device)
    data = (data or build_federated_data(config.data, config.seed)).to(device)
    torch.manual_seed(derive_seed(config.seed, "init"))
    model = build_model(config.model, data.input_shape, data.num_classes).to(device)
    layout = ParamLayout.of(model)

    def make_engine(d: FederatedData):  # type: ignore[no-untyped-def]
        return make_gradient_engine(config.engine, model, layout, d, config.seed,
                                    cohort_size=typical_cohort(config, d.nodes),
                                    batch_size=config.train.batch_size)

    ctx = RunContext(config=config, data=data, model=model, layout=layout,
                     engine=make_engine(data), init_params=flat_params(model),
                     init_buffers=model_buffers(model), make_engine=make_engine)
    return distribute(ctx)


def build_algorithm(ctx: RunContext) -> Algorithm:
    return ALGORITHMS.get(ctx.config.algorithm.name)(ctx, ctx.config.algorithm)


def _weighted(values: torch.Tensor, weights: torch.Tensor | None) -> float:
    if weights is None or float(weights.sum()) == 0:
        return float(values.mean())
    w = weights.to(values.dtype)
    return float((values * w).sum() / w.sum())


def evaluate(algo: Algorithm, result: RoundResult) -> dict[str, dict[str, float]]:
    """Per evaluated model: train/val/test loss and accuracy."""
    ctx = algo.ctx
    params, buffers, labels = algo.models()
    engine, data = ctx.engine, ctx.data
    test_loss, test_acc = engine.evaluate(params, buffers, data.test_x, data.test_y)
    per_node = len(labels) == data.nodes and getattr(algo, "per_node_models", False)
    if per_node:
        vals = [engine.evaluate(params[i: i + 1], {k: v[i: i + 1] for k, v in buffers.items()},
                                data.x[idx], data.y[idx]) for i, idx in enumerate(data.val_idx)]
        val_loss = torch.cat([v[0] for v in vals])
        val_acc = torch.cat([v[1] for v in vals])
    else:
        idx = data.union_val()
        val_loss, val_acc = engine.evaluate(params, buffers, data.x[idx], data.y[idx])
    train_loss = result.node_train.get("loss")
    train_acc = result.node_train.get("acc")
    rows = {}
    for i, label in enumerate(labels):
        rows[label] = {
            "train_loss": float(train_loss[i]) if train_loss is not None else result.train_loss,
            "train_acc": float(train_acc[i]) if train_acc is not None else result.train_acc,
            "val_loss": float(val_loss[i]), "val_acc": float(val_acc[i]),
            "test_loss": float(test_loss[i]), "test_acc": float(test_acc[i]),
        }
    return rows


def summarize_models(rows: dict[str, dict[str, float]], weights: torch.Tensor | None
                     ) -> dict[str, float]:
    """Mean (weighted) over evaluated models; min/max of test accuracy when there are several."""
    keys = next(iter(rows.values())).keys()
    table = {k: torch.tensor([r[k] for r in rows.values()], dtype=torch.float64) for k in keys}
    out = {k: _weighted(v, weights) for k, v in table.items()}
    if len(rows) > 1:
        out["test_acc_min"] = float(table["test_acc"].min())
        out["test_acc_max"] = float(table["test_acc"].max())
    return out


class Runner:
    """Drives one run; ``progress`` receives (round, rounds, summary row) after each round."""

    def __init__(self, config: Config, run_dir: RunDirectory | None,
                 progress: Callable[[int, int, dict[str, float]], None] | None = None,
                 data: FederatedData | None = None) -> None:
        self.config = config
        self.ctx = build_context(config, data)
        self.algo = build_algorithm(self.ctx)
        self.run_dir = run_dir
        self.progress = progress
        self.history: list[dict[str, float]] = []
        self.totals = {"bytes_up": 0, "bytes_down": 0, "sim_time_s": 0.0, "wall_s": 0.0}
        self.best: dict[str, float] = {}
        self.start_round = 0

    def resume(self) -> None:
        assert self.run_dir is not None
        ckpt = self.run_dir.load_checkpoint()
        if ckpt is None:
            raise UserError(f"--resume {self.run_dir.path}: no checkpoint to resume from "
                            "(output.checkpoint_every was 0 or the run died before round 1)")
        done, tensors, meta = ckpt
        self.algo.load_state(tensors)
        self.start_round = done
        self.totals.update(meta["totals"])
        self.best = meta["best"]
        self.history = meta["history"]
        if is_writer():
            self.run_dir.truncate(done)

    def _record(self, r: int, res: RoundResult, rows: dict[str, dict[str, float]],
                wall: float) -> dict[str, float]:
        summary = summarize_models(rows, self.algo.model_weights())
        summary.update(res.extras)
        summary.update(round=r + 1, sim_time=self.totals["sim_time_s"], wall_time=wall)
        if self.run_dir is not None:
            sim = self.totals["sim_time_s"]
            metric_rows: list[tuple[Any, ...]] = []
            labeled = dict(rows)
            if len(rows) > 1:
                labeled["mean"] = {k: v for k, v in summary.items() if k in rows[next(iter(rows))]}
            for label, row in labeled.items():
                for key, value in row.items():
                    split, metric = key.split("_", 1)
                    metric_rows.append((r + 1, label, split, metric, value, sim, wall))
            for key, value in res.extras.items():
                metric_rows.append((r + 1, "all", "stats", key, value, sim, wall))
            self.run_dir.append_metrics(metric_rows)
            self.run_dir.append_node_rows({k: {"epoch": r + 1, **v} for k, v in rows.items()})
        return summary

    def run(self) -> Result:
        cfg = self.config
        t0 = time.perf_counter() - self.totals["wall_s"]
        for r in range(self.start_round, cfg.rounds):
            res = self.algo.round(r)
            self.totals["bytes_up"] += res.bytes_up
            self.totals["bytes_down"] += res.bytes_down
            self.totals["sim_time_s"] += res.sim_time
            last = r == cfg.rounds - 1
            if (r + 1) % cfg.output.eval_every == 0 or last:
                wall = time.perf_counter() - t0
                rows = evaluate(self.algo, res)
                if not all(math.isfinite(row[k]) for row in rows.values()
                           for k in ("train_loss", "test_loss")):
                    raise DivergenceError(
                        f"training diverged (loss is NaN/inf) at round {r + 1}: lower "
                        f"train.lr (now {cfg.train.lr}) or check the data; the run directory "
                        "keeps the rounds before it")
                summary = self._record(r, res, rows, wall)
                self.history.append(summary)
                if summary["test_acc"] > self.best.get("test_acc", -1.0):
                    self.best = {k: v for k, v in summary.items() if k != "wall_time"}
                if self.progress:
                    self.progress(r + 1, cfg.rounds, summary)
            self.totals["wall_s"] = time.perf_counter() - t0
            every = cfg.output.checkpoint_every
            # every rank takes part in state() (it gathers split node states); rank 0 writes
            if (self.run_dir is not None or under_torchrun()) and every and (
                    (r + 1) % every == 0 or last):
                state = self.algo.state()
                if self.run_dir is not None:
                    self.run_dir.save_checkpoint(
                        r + 1, state,
                        {"totals": self.totals, "best": self.best, "history": self.history})
        return self.finish()

    def finish(self) -> Result:
        final = dict(self.history[-1]) if self.history else {}
        final.pop("wall_time", None)
        summary = {
            "final": final, "best": self.best, "rounds": self.config.rounds,
            "wall_s": self.totals["wall_s"], "sim_time_s": self.totals["sim_time_s"],
            "bytes_up": self.totals["bytes_up"], "bytes_down": self.totals["bytes_down"],
            "algorithm": self.config.algorithm.name, "engine": self.ctx.engine.name,
            "engine_calibration": getattr(self.ctx.engine, "calibration", None),
            "version": __version__, "seed": self.config.seed,
        }
        exchange = getattr(self.algo, "exchange_mode", None)  # decentralized runs
        if exchange is not None:
            summary["neighbour_exchange"] = exchange
        if self.run_dir is not None:
            self.run_dir.write_summary(summary)
            if self.config.output.plots:  # drawn at the end: matplotlib stays off start-up
                from fedweave.records.plots import plot_curves, plot_partition

                plots = self.run_dir.plots_dir
                plot_curves({self.config.name: self.run_dir.read_metrics()}, plots)
                plot_partition(self.ctx.data.label_counts(), plots / "partition.png")
                self.algo.write_artifacts(plots)
        return Result(self.run_dir.path if self.run_dir else None, summary, self.history,
                      self.algo)


def run(config: Config | str | Path | None = None, *, resume: str | Path | None = None,
        progress: Callable[[int, int, dict[str, float]], None] | None = None,
        write: bool = True) -> Result:
    """Run an experiment (the Python API behind ``fedweave run``).

    ``config``: a ``Config``, a path to a YAML/TOML file, or None for the built-in default.
    ``resume``: a run directory to continue from its last checkpoint (its config.yaml is used).
    ``write``: False runs without a run directory (tests, sweeps in memory).
    """
    if resume is not None:
        run_dir = RunDirectory.open(Path(resume))
        cfg = load_config(run_dir.path / "config.yaml")
        runner = Runner(cfg, run_dir, progress)
        runner.resume()
        if not is_writer():
            runner.run_dir = None  # other ranks read the checkpoint but never write
        return runner.run()
    cfg = config if isinstance(config, Config) else load_config(config)
    runner = Runner(cfg, None, progress)  # validates data and model before creating files
    if write and is_writer():
        runner.run_dir = RunDirectory.create(cfg)
    return runner.run()
