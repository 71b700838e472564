"""Runs one stage of an experiment: builds the context and the algorithm from the config,
loops over rounds, evaluates, writes the run directory, checkpoints and resumes.
Multi-stage runs (train → score → prune → retrain, ...) chain runners
(``fedweave.workflows.stages``); what happens around the rounds is in callbacks
(``fedweave.callbacks``)."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedweave.algorithms import ALGORITHMS
from fedweave.algorithms.base import Algorithm, RoundResult
from fedweave.callbacks import Callback, RunView, configured_callbacks
from fedweave.config import Config, config_to_dict, dump_config
from fedweave.config.legacy import migrate_legacy_keys
from fedweave.config.limits import check_limits
from fedweave.context import RunContext, build_context
from fedweave.core.state import flatten, unflatten
from fedweave.data.federated import FederatedData
from fedweave.distributed import is_writer, under_torchrun
from fedweave.errors import DivergenceError, UserError
from fedweave.evaluation import client_validation, personal_test, spread
from fedweave.plugins import load_config
from fedweave.preprocessing import preprocessing
from fedweave.records.environment import environment
from fedweave.records.ranklog import RankLog, share_path
from fedweave.records.restore import CLIENT_ROWS_KEY, ROUND_METRICS, ClientRows, restore_records
from fedweave.records.rundir import (
    CLIENT_COLUMNS,
    RunDirectory,
    atomic_write,
    claim,
    first_difference,
    prepare_output,
    release_claim,
)
from fedweave.training.decisions import BACKENDS
from fedweave.version import __version__

#: config keys a resume may change (everything else would mix two experiments in one run)
RESUMABLE_KEYS = ("rounds", "output.progress", "output.plots", "output.eval_every",
                  "output.tensorboard", "output.mlflow", "output.target_acc",
                  "output.stop_at_target", "output.max_sim_s", "notify")


@dataclass
class Result:
    """What ``fedweave.run`` returns: the run directory, summary.json's content and the
    per-round history (one dict per evaluated round)."""

    run_dir: Path | None
    summary: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    algorithm: Algorithm | None = None


def build_algorithm(ctx: RunContext) -> Algorithm:
    return ALGORITHMS.get(ctx.config.algorithm.name)(ctx, ctx.config.algorithm)


def _weighted(values: torch.Tensor, weights: torch.Tensor | None) -> float:
    if weights is None or float(weights.sum()) == 0:
        return float(values.mean())
    w = weights.to(values.dtype)
    return float((values * w).sum() / w.sum())


def evaluate(algo: Algorithm, result: RoundResult, clients: torch.Tensor | None = None
             ) -> dict[str, dict[str, float]]:
    """Per evaluated model: train/val/test loss and accuracy. A federated model's val_* pools
    the validation samples of ``clients`` (``output.client_eval``: the cohort), or of every
    client when None."""
    ctx = algo.ctx
    params, buffers, labels = algo.models()
    engine, data = ctx.engine, ctx.data
    test_loss, test_acc = engine.evaluate(params, buffers, data.test_inputs(), data.test_y)
    per_node = len(labels) == data.nodes and getattr(algo, "per_node_models", False)
    if per_node:
        vals = [engine.evaluate(params[i: i + 1], {k: v[i: i + 1] for k, v in buffers.items()},
                                *data.take_inputs(idx)) for i, idx in enumerate(data.val_idx)]
        val_loss = torch.cat([v[0] for v in vals])
        val_acc = torch.cat([v[1] for v in vals])
    else:
        idx = data.union_val() if clients is None else \
            torch.cat([data.val_idx[c] for c in clients.tolist()]).unique()
        val_loss, val_acc = engine.evaluate(params, buffers, *data.take_inputs(idx))
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


def config_fingerprint(config: Config) -> tuple[str, dict[str, Any]]:
    """(sha256, resolved config) of what determines a run's numbers (resumable keys out)."""
    data = config_to_dict(config)
    for key in RESUMABLE_KEYS:
        section, *rest = key.split(".")
        if rest:
            data.get(section, {}).pop(rest[0], None)
        else:
            data.pop(section, None)
    return _digest(data), data


def _digest(resolved: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def _same_config(meta: dict[str, Any], digest: str) -> bool:
    """Whether a checkpoint was written under the config whose fingerprint is ``digest``;
    a checkpoint of an older fedweave recorded its config under older key names
    (``fedweave.config.legacy``), which are migrated before comparing."""
    if meta.get("config_sha256") in (None, digest):
        return True
    recorded = meta.get("config")
    if not isinstance(recorded, dict):
        return False
    try:
        migrated = migrate_legacy_keys(copy.deepcopy(recorded), warn=False)
    except UserError:
        return False
    return _digest(migrated) == digest


class Runner:
    """Drives one run: the round loop, evaluation, records, checkpoints and callbacks."""

    def __init__(self, config: Config, run_dir: RunDirectory | None,
                 callbacks: Iterable[Callback] = (), data: FederatedData | None = None,
                 backend: str | None = None, source: Path | None = None) -> None:
        self.config = config
        t0 = time.perf_counter()
        check_limits(config)  # sizes that cannot fit are refused before data and model
        self.ctx = build_context(config, data, backend)
        self.algo = build_algorithm(self.ctx)
        #: wall seconds of the phases around the round loop (summary.json ``timing``)
        self.timing = {"setup_s": time.perf_counter() - t0}
        self._early_plots: threading.Thread | None = None
        self._plot_errors: list[BaseException] = []
        self.run_dir = run_dir
        self.callbacks = [*configured_callbacks(config), *callbacks]
        self.history: list[dict[str, float]] = []
        #: every round's [round, bytes_up, bytes_down, lr, sim_s, sim_time, wall] (checkpointed:
        #: damaged records are rebuilt from it and the history, ``records.restore``)
        self.round_log: list[list[Any]] = []
        self.client_rows = ClientRows()  # clients.csv's rows, for the checkpoint
        self.last_rows: dict[str, dict[str, float]] = {}
        self.totals = {"bytes_up": 0, "bytes_down": 0, "sim_time_s": 0.0, "wall_s": 0.0}
        self.best: dict[str, float] = {}
        self.start_round = 0
        self.stopped_early = False
        #: why the loop ended: rounds | target_acc | max_sim_s | a callback's stop_reason
        self.stop_reason = "rounds"
        self.has_val = sum(len(v) for v in self.ctx.data.val_idx) > 0
        comm = self.ctx.comm
        self.environment = environment(source, comm.world if comm is not None else 1,
                                       self.ctx.device)
        self.environment["threads_rule"] = self.ctx.threads.get("rule", "")
        self.environment["workers"] = self.ctx.threads.get("workers", 1)

    # ------------------------------------------------------------------ resume
    def resume(self, ckpt: tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None) -> None:
        """Continue from ``ckpt`` (from ``RunDirectory.checkpoints.load``); None restarts the
        run in place from round 0 (it died before its first checkpoint)."""
        assert self.run_dir is not None
        if ckpt is None:
            if is_writer():
                self.run_dir.start(self.config)
            return
        done, tensors, meta = ckpt
        tensors = dict(tensors)
        carried = tensors.pop(CLIENT_ROWS_KEY, None)
        self.client_rows = ClientRows(carried).upto(done) if carried is not None else \
            ClientRows()
        try:
            self.algo.load_state(unflatten(tensors))
        except (KeyError, RuntimeError, ValueError, IndexError) as exc:
            raise UserError(f"--resume {self.run_dir.path}: the checkpoint of round {done} does "
                            f"not fit this run's model and algorithm ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:120]}); start a new run") from None
        self.start_round = done
        first = meta.get("environment")
        if first:
            resumed = [*first.get("resumed", []), {**self.environment, "from_round": done}]
            self.environment = {**first, "resumed": resumed}
        self.totals.update(meta["totals"])
        self.best = meta["best"]
        self.history = meta["history"]
        self.round_log = meta.get("round_log", [])
        if is_writer():
            restore_records(self.run_dir, done, self.history, self.round_log,
                            self.algo.model_labels(),
                            self.client_rows if carried is not None else None)

    # ------------------------------------------------------------------ records
    def _write_facts(self) -> None:
        """partition.json and model.json: what the report and ``fedweave export`` need
        without loading the data."""
        assert self.run_dir is not None
        data = self.ctx.data
        labels = self.algo.model_labels()  # only the writer gets here: no collective
        # a population drawn on demand has no label counts without drawing all of it
        self.run_dir.write_json("partition.json", {
            "counts": None if data.on_demand else data.label_counts().tolist(),
            "sizes": data.sizes.tolist(),
            "val": [len(v) for v in data.val_idx], "test": len(data.test_y)})
        self.run_dir.write_json("model.json", {
            "input_shape": list(data.input_shape), "num_classes": data.num_classes,
            "parameters": self.ctx.layout.total, "labels": labels,
            "preprocessing": preprocessing(data)})

    def _record_round(self, r: int, res: RoundResult, wall: float) -> None:
        """Every round: traffic, learning rate and virtual duration in metrics.csv (node
        ``all``, split ``round``; the wall_time column is the wall clock at the round's end)."""
        if self.run_dir is None:
            return
        sim = self.totals["sim_time_s"]
        values = (res.bytes_up, res.bytes_down, self.ctx.lr(r), res.sim_time)
        self.round_log.append([r + 1, *values, sim, wall])
        self.run_dir.append_metrics(
            (r + 1, "all", "round", metric, value, sim, wall)
            for metric, value in zip(ROUND_METRICS, values, strict=True))

    def eval_clients(self, res: RoundResult) -> torch.Tensor | None:
        """The clients whose validation split an evaluation touches (``output.client_eval``):
        the round's cohort (sorted ids), or None for every client."""
        if self.config.output.client_eval == "cohort" and "client" in res.clients:
            return res.clients["client"].cpu().long().unique()
        return None

    def _record_clients(self, r: int, res: RoundResult, summary: dict[str, float],
                        metric_rows: list[tuple[Any, ...]], wall: float,
                        clients: torch.Tensor | None) -> dict[int, dict[str, float]]:
        """Per-client validation of the model each client uses (``fedweave.evaluation``) for
        the clients ``output.client_eval`` picks, and its spread over them (mean/min/max/std)
        in metrics.csv (node ``clients``) and in the summary row (``clients_val_acc_min``,
        ...; ``clients_val_n``: how many clients it is over). Returns the rows for
        clients.csv."""
        if self.config.output.client_eval == "never":
            return {}
        per = client_validation(self.algo, clients)
        if per is None:
            return {}
        sim = self.totals["sim_time_s"]
        for metric in ("acc", "loss"):
            for stat, value in spread(per[metric]).items():
                summary[f"clients_val_{metric}_{stat}"] = value
                metric_rows.append((r + 1, "clients", "val", f"{metric}_{stat}", value, sim,
                                    wall))
        has = per["count"] > 0
        summary["clients_val_n"] = int(has.sum())
        metric_rows.append((r + 1, "clients", "val", "n", int(has.sum()), sim, wall))
        return {c: {"val_loss": float(lo), "val_acc": float(ac)} for c, lo, ac in zip(
            per["client"][has].tolist(), per["loss"][has].tolist(), per["acc"][has].tolist(),
            strict=True)}

    def _record_personal(self, r: int, summary: dict[str, float],
                         metric_rows: list[tuple[Any, ...]], wall: float) -> None:
        """The personalised test (``data.client_test_fraction``; ``fedweave.evaluation.
        personal_test``): ``personal_test_acc`` (sample-weighted), ``_min``/``_max``/``_std``
        and ``personal_test_loss`` in the summary row, and in metrics.csv (node ``clients``,
        split ``personal_test``)."""
        per = personal_test(self.algo, self.config.output.finetune_steps,
                            key=self.config.rounds + r)
        if per is None:
            return
        sim = self.totals["sim_time_s"]
        for metric, value in per.items():
            summary[f"personal_test_{metric}"] = value
            metric_rows.append((r + 1, "clients", "personal_test", metric, value, sim, wall))

    def _append_clients(self, r: int, res: RoundResult,
                        evaluated: dict[int, dict[str, float]]) -> None:
        """One append to clients.csv per round: each cohort member's training loss and
        accuracy, and the validation of the clients evaluated this round."""
        if self.run_dir is None:
            return
        rows: list[tuple[int, dict[str, float]]] = []  # a client may report twice (async)
        if "client" in res.clients:
            stats = {k: v.tolist() for k, v in res.clients.items()
                     if k in ("train_loss", "train_acc")}
            rows = [(c, {name: float(v[k]) for name, v in stats.items()})
                    for k, c in enumerate(res.clients["client"].tolist())]
        first = {c: row for c, row in reversed(rows)}
        for c, row in evaluated.items():
            if c in first:
                first[c].update(row)
            else:
                rows.append((c, row))
        if rows:
            rows.sort(key=lambda item: item[0])  # stable: a client's reports in their order
            table = [(r + 1, c, *(row.get(k, "") for k in CLIENT_COLUMNS[2:])) for c, row in rows]
            self.run_dir.append_clients(table)
            self.client_rows.append(table)

    def _record(self, r: int, res: RoundResult, rows: dict[str, dict[str, float]],
                wall: float, clients: torch.Tensor | None
                ) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
        summary = summarize_models(rows, self.algo.model_weights())
        summary.update(res.extras)
        summary.update(round=r + 1, sim_time=self.totals["sim_time_s"], wall_time=wall)
        self.last_rows = rows  # per evaluated model, for trackers
        client_rows: list[tuple[Any, ...]] = []
        evaluated = self._record_clients(r, res, summary, client_rows, wall, clients)
        self._record_personal(r, summary, client_rows, wall)
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
            self.run_dir.append_metrics([*metric_rows, *client_rows])
            self.run_dir.append_node_rows({k: {"epoch": r + 1, **v} for k, v in rows.items()})
        return summary, evaluated

    def _update_best(self, summary: dict[str, float]) -> None:
        """Best round by validation accuracy (test at that round beside it); by test accuracy
        only when the run has no validation split."""
        key = "val_acc" if self.has_val else "test_acc"
        if summary[key] > self.best.get(key, -1.0):
            self.best = {k: v for k, v in summary.items() if k != "wall_time"}
            self.best["selected_by"] = key  # type: ignore[assignment]

    def _check_finite(self, r: int, res: RoundResult,
                      rows: dict[str, dict[str, float]] | None) -> None:
        """Stop when the models, the round's training loss or an evaluation are not finite
        (a robust aggregator rejecting every diverged upload must not hide a divergence)."""
        finite = self.algo.finite() if hasattr(self.algo, "finite") else True
        losses = res.clients.get("train_loss")  # each trained client's own loss
        if finite and losses is not None and len(losses):
            finite = bool(torch.isfinite(losses).all())
        if finite and rows is not None:
            finite = all(math.isfinite(row["test_loss"]) for row in rows.values())
        if not finite:
            where = f"; the run directory {self.run_dir.path} keeps the rounds before it" \
                if self.run_dir is not None else ""
            raise DivergenceError(
                f"training diverged (NaN/inf parameters or loss) in round {r + 1}: lower "
                f"train.lr (now {self.config.train.lr}) or check the data{where}")

    def _checkpoint(self, r: int, last: bool) -> None:
        every = self.config.output.checkpoint_every
        # every rank takes part in state() (it gathers split node states); rank 0 writes
        if not ((self.run_dir is not None or under_torchrun()) and every
                and ((r + 1) % every == 0 or last)):
            return
        state = flatten(self.algo.state())
        if self.run_dir is None:
            return
        if self.client_rows.count:
            state[CLIENT_ROWS_KEY] = self.client_rows.tensor()
        digest, resolved = config_fingerprint(self.config)
        score = self.history[-1].get("val_acc") if self.history else None
        self.run_dir.checkpoints.save(
            r + 1, state,
            {"totals": self.totals, "best": self.best, "history": self.history,
             "round_log": self.round_log, "config_sha256": digest, "config": resolved,
             "backend": self.ctx.backend,
             "environment": self.environment},
            score=score if self.history and self.history[-1]["round"] == r + 1 else None,
            background=not last)  # written beside the next round; the last one at once
        for cb in self.callbacks:
            cb.on_checkpoint(self, r)

    # ------------------------------------------------------------------ the loop
    def run(self) -> Result:
        cfg = self.config
        early: threading.Thread | None = None
        if self.run_dir is not None:
            self._write_facts()
            early = self._start_plots()
        self._early_plots = early
        for cb in self.callbacks:
            cb.on_start(self)
        t0 = time.perf_counter() - self.totals["wall_s"]
        rank_log = self._rank_log()
        try:
            for r in range(self.start_round, cfg.rounds):
                res = self.algo.round(r)
                self.totals["bytes_up"] += res.bytes_up
                self.totals["bytes_down"] += res.bytes_down
                self.totals["sim_time_s"] += res.sim_time
                self._record_round(r, res, time.perf_counter() - t0)
                for cb in self.callbacks:
                    cb.on_round(self, r, res)
                budget = cfg.output.max_sim_s
                over = budget is not None and self.totals["sim_time_s"] >= budget
                last = r == cfg.rounds - 1 or over  # the budget's last round is evaluated
                rows = None
                evaluated: dict[int, dict[str, float]] = {}
                if (r + 1) % cfg.output.eval_every == 0 or last:
                    wall = time.perf_counter() - t0
                    clients = self.eval_clients(res)
                    rows = evaluate(self.algo, res, clients)
                    self._check_finite(r, res, rows)
                    summary, evaluated = self._record(r, res, rows, wall, clients)
                    if rank_log is not None:
                        rank_log.write(r, rows, self.totals["sim_time_s"], wall)
                    self.history.append(summary)
                    self._update_best(summary)
                    for cb in self.callbacks:
                        cb.on_evaluate(self, r, summary)
                else:
                    self._check_finite(r, res, None)
                self._append_clients(r, res, evaluated)
                self.totals["wall_s"] = time.perf_counter() - t0
                stopper = next((cb for cb in self.callbacks if cb.should_stop(self)), None)
                stop = stopper is not None or (over and r < cfg.rounds - 1)
                self._checkpoint(r, last or stop)
                if stop:
                    self.stopped_early = True
                    self.stop_reason = (getattr(stopper, "stop_reason", type(stopper).__name__)
                                        if stopper is not None else "max_sim_s")
                    break
        except BaseException as exc:
            if self.run_dir is not None:  # a checkpoint still being written lands first
                with contextlib.suppress(Exception):
                    self.run_dir.checkpoints.flush()
            for cb in self.callbacks:
                cb.on_failure(self, exc)
            raise
        return self.finish()

    def _start_plots(self) -> threading.Thread | None:
        """Import matplotlib and draw the partition heatmap on a thread beside the first
        rounds (the round loop releases the GIL in its kernels, and with one training thread
        the second core is idle), so neither costs start-up nor the end of the run."""
        if not self.config.output.plots or not is_writer():
            return None
        counts = None if self.ctx.data.on_demand else self.ctx.data.label_counts()
        path = self.run_dir.plots_dir / "partition.png"  # type: ignore[union-attr]

        def draw() -> None:
            from fedweave.records.plots import plot_partition

            try:
                if counts is not None:
                    plot_partition(counts, path)
            except BaseException as exc:  # raised again where the plots are awaited
                self._plot_errors.append(exc)

        thread = threading.Thread(target=draw, name="fedweave-plots", daemon=True)
        thread.start()
        return thread

    def _rank_log(self) -> RankLog | None:
        """Ranks running separately: each appends to ``nodes/rank<r>.log`` of rank 0's run
        directory (``records.ranklog``); a collective, so every rank calls it."""
        comm = self.ctx.comm
        if comm is None or comm.world == 1:
            return None
        path = share_path(comm, self.run_dir.path if self.run_dir is not None else None)
        if path is None:
            return None
        labels = self.algo.model_labels()
        part = getattr(self.algo, "part", None)
        if part is not None and part.split:
            held, info = labels[part.lo:part.hi], "point-to-point: the nodes this rank trains"
        else:
            held, info = labels, "every rank holds every model"
        return RankLog(path, comm, held, info)

    def finish(self) -> Result:
        t_finish = time.perf_counter()
        final = dict(self.history[-1]) if self.history else {}
        final.pop("wall_time", None)
        summary = {
            "final": final, "best": self.best, "rounds": self.config.rounds,
            "rounds_done": int(final.get("round", self.start_round)),
            "stopped_early": self.stopped_early, "stop_reason": self.stop_reason,
            "wall_s": self.totals["wall_s"], "sim_time_s": self.totals["sim_time_s"],
            "bytes_up": self.totals["bytes_up"], "bytes_down": self.totals["bytes_down"],
            "algorithm": self.config.algorithm.name, "engine": self.ctx.engine.name,
            "backend": self.ctx.backend, "engine_calibration": self.ctx.calibration,
            "version": __version__, "seed": self.config.seed, **self.algo.info(),
            "environment": self.environment,
        }
        summary["headline"] = headline(self.algo, final)
        result = Result(self.run_dir.path if self.run_dir else None, summary, self.history,
                        self.algo)
        if self.run_dir is not None:
            self.run_dir.write_summary(summary)
            if self.config.output.plots:
                if self._early_plots is not None:
                    self._early_plots.join()
                    if self._plot_errors:
                        raise self._plot_errors[0]
                from fedweave.records.plots import plot_curves, round_label

                plots = self.run_dir.plots_dir
                plot_curves({self.config.name: self.run_dir.read_metrics()}, plots,
                            rounds=round_label([self.config.algorithm.kind]))
                self.algo.write_artifacts(plots)
            self.timing["finish_s"] = time.perf_counter() - t_finish
            summary["timing"] = {**self.timing, "rounds_s": self.totals["wall_s"]}
            self.run_dir.write_summary(summary)
        for cb in self.callbacks:
            cb.on_finish(self, result)
        return result


def headline(algo: Algorithm, row: dict[str, Any]) -> dict[str, Any]:
    """The accuracy a run is quoted by: ``{metric, value, label}`` (the algorithm's
    ``headline`` when the row has it, else the test accuracy)."""
    metric, label = algo.headline or ("test_acc", "test accuracy")
    if metric not in row:
        metric, label = "test_acc", "test accuracy"
    return {"metric": metric, "value": row.get(metric), "label": label}


def _progress_callback(progress: Callable[[int, int, dict[str, float]], None]) -> Callback:
    class Progress(Callback):
        def on_evaluate(self, runner: RunView, r: int, row: dict[str, Any]) -> None:
            progress(r + 1, runner.config.rounds, row)

    return Progress()


def check_checkpoint_meta(done: int, meta: dict[str, Any]) -> None:
    """What a resume takes from a checkpoint's metadata, checked (``ValueError`` names the
    problem; the checkpoint is then treated as damaged): the totals, best, history and engine."""
    totals = meta.get("totals")
    if not isinstance(totals, dict) or not {"bytes_up", "bytes_down", "sim_time_s",
                                            "wall_s"} <= set(totals):
        raise ValueError("its totals are missing or incomplete")
    if not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0
               for v in totals.values()):
        raise ValueError("its totals are not finite non-negative numbers")
    if not isinstance(meta.get("best"), dict):
        raise ValueError("its best round is missing")
    history = meta.get("history")
    if not isinstance(history, list) or not all(
            isinstance(h, dict) and isinstance(h.get("round"), int) for h in history):
        raise ValueError("its history is missing or malformed")
    rounds = [h["round"] for h in history]
    if rounds != sorted(set(rounds)) or (rounds and not 1 <= rounds[0] <= rounds[-1] <= done):
        raise ValueError(f"its history does not lead up to round {done}")
    log = meta.get("round_log", [])
    if not isinstance(log, list) or not all(isinstance(r, list) and len(r) == 7 for r in log):
        raise ValueError("its round log is malformed")
    if meta.get("backend") not in (None, *BACKENDS):
        raise ValueError(f"its engine {meta.get('backend')!r} is not one of "
                         f"{', '.join(BACKENDS)}")


def resume_config(run_dir: RunDirectory, overrides: list[str], imports: Iterable[str] = ()
                  ) -> tuple[Config, tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None]:
    """The config of a run being resumed (``overrides`` may change only ``RESUMABLE_KEYS``)
    and its newest good checkpoint; a config.yaml edited since the checkpoint is refused."""
    base = load_config(run_dir.path / "config.yaml", [], imports)
    cfg = load_config(run_dir.path / "config.yaml", overrides, imports)
    digest, resolved = config_fingerprint(cfg)
    if config_fingerprint(base)[0] != digest:
        key = first_difference(config_fingerprint(base)[1], resolved)
        raise UserError(f"--resume: --set {key}=... would change the run's numbers; a resume "
                        f"may only change {', '.join(RESUMABLE_KEYS)} (start a new run instead)")
    run_dir.configure(cfg)
    ckpt = run_dir.checkpoints.load(check_checkpoint_meta)
    if ckpt is not None and not _same_config(ckpt[2], digest):
        key = first_difference(ckpt[2].get("config", {}), resolved)
        raise UserError(f"--resume {run_dir.path}: config.yaml was changed since the run "
                        f"started ({key} differs from the checkpoint's); restore it or start a "
                        "new run")
    if ckpt is not None and ckpt[0] > cfg.rounds:
        raise UserError(f"--resume {run_dir.path}: the checkpoint is of round {ckpt[0]} but the "
                        f"run has rounds={cfg.rounds}; resume with --set rounds={ckpt[0]} or more")
    # killed after its last checkpoint but before summary.json: the resume only finishes it
    if ckpt is not None and ckpt[0] == cfg.rounds and (run_dir.path / "summary.json").is_file():
        raise UserError(f"--resume {run_dir.path}: the run already finished its {cfg.rounds} "
                        f"rounds (summary.json has the result); extend it with --resume "
                        f"{run_dir.path} --set rounds={cfg.rounds * 2}")
    if overrides and is_writer():
        atomic_write(run_dir.path / "config.yaml", dump_config(cfg))
    return cfg, ckpt


def run(config: Config | str | Path | None = None, *, resume: str | Path | None = None,
        overrides: list[str] | None = None,
        progress: Callable[[int, int, dict[str, float]], None] | None = None,
        callbacks: Iterable[Callback] = (), imports: Iterable[str] = (),
        write: bool = True, source: str | Path | None = None,
        run_dir: str | Path | None = None) -> Result:
    """Run an experiment (the Python API behind ``fedweave run``).

    ``config``: a ``Config``, a path to a YAML/TOML file, or None for the built-in default.
    ``resume``: a run directory to continue from its newest good checkpoint (its config.yaml
    is used; ``overrides`` may extend ``rounds``). ``imports``: plugin modules.
    ``write``: False runs without a run directory (tests, sweeps in memory).
    ``source``: the config file a ``Config`` came from (its git commit goes to summary.json).
    ``run_dir``: the run directory itself instead of ``<output.dir>/<name>-<timestamp>``
    (it must not hold a run yet).
    """
    cbs = [*callbacks, *([_progress_callback(progress)] if progress else [])]
    if source is None and isinstance(config, str | Path):
        source = config
    src = Path(source) if source is not None else None
    if resume is not None:
        opened = RunDirectory.open(Path(resume), lock=is_writer())
        try:
            cfg, ckpt = resume_config(opened, list(overrides or []), imports)
            backend = ckpt[2].get("backend") if ckpt else None
            runner = Runner(cfg, opened, cbs, backend=backend, source=src)
            runner.resume(ckpt)
            if not is_writer():
                runner.run_dir = None  # other ranks read the checkpoint but never write
            return runner.run()
        finally:
            opened.lock.release()
    if isinstance(config, Config):
        if overrides:
            raise UserError("fedweave.run: overrides apply to a config file, not a Config")
        cfg = config
    else:
        cfg = load_config(config, list(overrides or []), imports)
    at = Path(run_dir) if run_dir is not None else None
    claimed, existed = None, at is not None and at.exists()
    if write and is_writer():  # a bad --out fails before data and model are built
        prepare_output(cfg.output.dir if at is None else at.parent)
        if at is not None:  # created and locked at once: a second start is refused
            claimed = claim(at)
    try:
        runner = Runner(cfg, None, cbs, source=src)  # validates data and model before any file
        if write and is_writer():
            runner.run_dir = RunDirectory.create(cfg, at=at, lock=claimed)
    except BaseException:
        if claimed is not None and at is not None:
            claimed.release()
            if not existed and not (at / "config.yaml").exists():
                release_claim(at)
        raise
    try:
        return runner.run()
    finally:
        if runner.run_dir is not None:
            runner.run_dir.lock.release()
