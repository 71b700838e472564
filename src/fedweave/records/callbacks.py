"""Records of time to accuracy (callbacks, registered for every run):

* ``output.target_acc`` → summary.json ``time_to_target: {sim_s, update}``: the simulated
  seconds and the server update (round) of the first evaluation whose test accuracy reaches
  the target, or null; ``output.stop_at_target`` ends the run there (``stop_reason:
  target_acc``; ``output.max_sim_s``, the simulated-time budget, is the runner's own);
* traffic: every evaluated row carries the cumulative ``bytes_up_total`` /
  ``bytes_down_total`` (split "stats") beside ``sim_time`` (each update's own ``bytes_up`` /
  ``bytes_down`` are the runner's "round" rows), so accuracy can be plotted against bytes
  (``records.plots``); runs with a target, a federated clock profile or an asynchronous
  algorithm;
* per-client densities over time: ``nodes/densities.csv`` (epoch, sim_time, client0, ...)
  for algorithms with ``client_densities()`` (PR-FL);
* cluster membership: ``clusters.csv`` (round, client, cluster), every round the clients
  clustered in it, for algorithms with ``round_clusters()`` (clustered FedAvg).
"""

from __future__ import annotations

import csv
from typing import TYPE_CHECKING, Any

from fedweave.callbacks import Callback, register_callback
from fedweave.config import Config

if TYPE_CHECKING:
    from fedweave.callbacks import RunResult, RunView
    from fedweave.core.rounds import RoundResult


class TimeToTarget(Callback):
    """The first evaluation reaching ``output.target_acc`` (also found again on resume from
    the checkpointed history); with ``stop`` (``output.stop_at_target``) the run ends there."""

    stop_reason = "target_acc"

    def __init__(self, target: float, stop: bool = False) -> None:
        self.target = target
        self.stop = stop
        self.hit: dict[str, float] | None = None

    def _check(self, row: dict[str, Any]) -> None:
        if self.hit is None and row.get("test_acc", -1.0) >= self.target:
            self.hit = {"sim_s": float(row["sim_time"]), "update": int(row["round"])}

    def on_start(self, runner: RunView) -> None:
        self.hit = None
        for row in runner.history:
            self._check(row)

    def on_evaluate(self, runner: RunView, r: int, row: dict[str, Any]) -> None:
        self._check(row)

    def should_stop(self, runner: RunView) -> bool:
        return self.stop and self.hit is not None

    def on_finish(self, runner: RunView, result: RunResult) -> None:
        result.summary["time_to_target"] = self.hit
        result.summary["target_acc"] = self.target
        if runner.run_dir is not None:
            runner.run_dir.write_summary(result.summary)


class Traffic(Callback):
    """Cumulative bytes on every row (the runner's totals after the round)."""

    def on_round(self, runner: RunView, r: int, result: RoundResult) -> None:
        result.extras["bytes_up_total"] = float(runner.totals["bytes_up"])
        result.extras["bytes_down_total"] = float(runner.totals["bytes_down"])


class Densities(Callback):
    """``nodes/densities.csv``: one row per evaluation, a column per client."""

    def on_evaluate(self, runner: RunView, r: int, row: dict[str, Any]) -> None:
        densities = getattr(runner.algo, "client_densities", None)
        if densities is None or runner.run_dir is None:
            return
        values = densities()
        path = runner.run_dir.nodes_dir / "densities.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", "sim_time", *values])
            w.writerow([r + 1, row["sim_time"], *values.values()])


class Clusters(Callback):
    """``clusters.csv``: one row per client clustered in a round (a client's cluster at round
    r is its last row at or before r). A resume drops the rows after its checkpoint
    (``RunDirectory.truncate``)."""

    def on_round(self, runner: RunView, r: int, result: RoundResult) -> None:
        clusters = getattr(runner.algo, "round_clusters", None)
        if clusters is None or runner.run_dir is None:
            return
        clients, labels = clusters()
        path = runner.run_dir.path / "clusters.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["round", "client", "cluster"])
            w.writerows((r + 1, c, k) for c, k in zip(clients.tolist(), labels.tolist(),
                                                      strict=True))


@register_callback
def _clusters(config: Config) -> Callback | None:
    return Clusters() if config.algorithm.name == "clustered" else None


@register_callback
def _time_to_target(config: Config) -> Callback | None:
    target = config.output.target_acc
    return TimeToTarget(target, config.output.stop_at_target) if target is not None else None


@register_callback
def _traffic(config: Config) -> Callback | None:
    timed = (config.output.target_acc is not None or config.algorithm.kind == "async"
             or config.clock.profile != "custom" or config.algorithm.name == "heterofl")
    return Traffic() if timed else None


@register_callback
def _densities(config: Config) -> Callback | None:
    return Densities() if config.algorithm.name == "prfl" else None
