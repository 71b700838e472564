"""The asynchronous federated event loop on the virtual clock.

Clients run *jobs*: download the server's current model (or the message a policy sends),
train locally, upload. Each job is three moments on the shared ``Scheduler``: dispatch (the
download starts through the server's upload link), ``computed`` (download + compute done:
the upload is requested on the server's download link) and ``arrival`` (the server has the
update). Times come from ``sim.clock.FederatedClock`` (per-job bandwidths, shared server
links, compute from the speed profile), never from wall time.

A policy (FedAsync, FedBuff, FedFix, PR-FL) decides what an arrival does (merge now, buffer,
hold until the next aggregation) and what a ``merge`` event does (FedFix's ticks, PR-FL's
windows); ``round(r)`` runs events until the policy updates the server model once, so
``rounds`` counts server updates. An upload with NaN/inf values (``clock.message_corruption``)
is discarded on arrival and counted (``updates_rejected``). After the events of an instant,
idle clients are dispatched (sampled from (seed, "dispatch", n) when more are idle than the
``concurrency`` allows) with the current model, all of them one dispatch group (one multicast
download).

Training is lazy and batched: a job's result depends only on its start model, its client, its
job index (the batch stream (seed, "batches", job, client)) and its learning rate, so when an
update must be read, every job still untrained is trained in one ``ctx.trainer.train`` call
(one vectorized cohort, or one distributed cohort under torchrun) and its row kept until its
arrival. Pending jobs (start version, job index, row: start model until trained, then the
trained model or its delta) are part of the checkpoint, with the event queue and the links.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import Algorithm, RoundResult
from fedweave.config import AlgorithmConfig, RootView, changed
from fedweave.context import RunContext
from fedweave.core.population import Buffers, stack_buffers
from fedweave.core.state import State, section
from fedweave.errors import UserError
from fedweave.rng import numpy_rng
from fedweave.robust.attacks import attack_record
from fedweave.sim.clock import FederatedClock
from fedweave.sim.scheduler import EPS, Event, Scheduler
from fedweave.training.batches import batch_width, local_steps
from fedweave.training.objectives import Objective


class AsyncConfig(AlgorithmConfig):
    """Base of the asynchronous algorithms' configs (asynchronous by definition)."""

    kind: ClassVar[Literal["federated", "decentralized", "async", "centralized"]] = "async"
    concurrency: int | None = Field(
        10, ge=1, description="clients with a job (in flight or waiting for the next "
        "aggregation), at most data.nodes; null = every client")

    def check(self, config: RootView) -> None:
        nodes = config.data.nodes
        # the default (10) is clamped to smaller populations; a value the user chose is not
        if "concurrency" in changed(self) and self.concurrency is not None \
                and self.concurrency > nodes:
            raise ValueError(f"algorithm.concurrency={self.concurrency} exceeds data.nodes="
                             f"{nodes}: at most every client has a job; lower it, or set it "
                             "to null (every client)")


@dataclass
class Job:
    """One client's job: where it started and what it has produced so far."""

    node: int
    version: int               # server version the job started from
    index: int                 # the client's job counter: its batch and bandwidth key
    lr: float
    row: torch.Tensor          # start model; once trained, the model (or Δ = start − model)
    buffers: Buffers
    samples: float             # samples processed: steps · min(B, n_i)
    trained: bool = False
    arrived: bool = False
    loss: float = math.nan
    acc: float = math.nan
    up_bytes: float = 0.0
    mask: torch.Tensor | None = None   # PR-FL: the submodel's mask (bool)
    rank: int = 0                      # PR-FL: the submodel's rank (density order)
    report: bool = False               # PR-FL: the upload carries an importance report


@dataclass
class Traffic:
    """Bytes since the last server update: up (received by the server), down (received by
    clients) and the server's upload stream (each multicast message once)."""

    up: float = 0.0
    down: float = 0.0
    server_out: float = 0.0
    extras: dict[str, float] = field(default_factory=dict)


class AsyncAlgorithm(Algorithm):
    """The event loop; subclasses implement ``on_arrival`` (and ``on_merge``)."""

    config: AsyncConfig
    #: what a trained job keeps: the trained model, or Δ = start − trained
    keep: ClassVar[Literal["model", "delta"]] = "model"
    KINDS = ("computed", "arrival", "merge")

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        data, train = ctx.data, ctx.config.train
        n = data.nodes
        self.x = ctx.init_params.clone()
        self.buffers: Buffers = dict(ctx.init_buffers)
        self.clock = Scheduler(self.KINDS)
        self.fclock = FederatedClock(ctx.config.clock, n, ctx.seed)
        self.concurrency = min(self.config.concurrency or n, n)
        self.sizes = data.sizes
        self.steps = local_steps(train, self.sizes)
        self.samples = (self.steps * self.sizes.clamp(max=train.batch_size)).double()
        self.width = batch_width(data, torch.arange(n), train.batch_size)
        self.jobs: dict[int, Job] = {}
        self.job_count = torch.zeros(n, dtype=torch.int64)
        self.version = 0
        self.dispatches = 0
        self.started = False
        self.last_update = 0.0
        self.traffic = Traffic()
        #: per client, simulated seconds spent downloading, computing, uploading and waiting
        #: (arrived, held until an aggregation); arrival times of held jobs
        self.spent = torch.zeros(n, 4, dtype=torch.float64)
        self.arrived_at = torch.zeros(n, dtype=torch.float64)

    # ------------------------------------------------------------------ policy hooks
    def start(self) -> None:
        """Called once, before the first dispatch (FedFix schedules its first tick)."""

    def start_row(self, node: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        """(start model, mask, rank) of a job dispatched to ``node`` now. Policies replace
        ``self.x`` by a new tensor on every update (never in place), so jobs of one version
        share it."""
        return self.x, None, 0

    def download(self, nodes: list[int]) -> tuple[list[float], list[tuple[float, float]],
                                                   list[float]]:
        """A dispatch group's multicast: (message sizes in stream order, the (lo, hi) bytes
        each node reads, the bytes each node receives). Default: one dense model."""
        b = float(self.ctx.model_bytes)
        return [b], [(0.0, b)] * len(nodes), [b] * len(nodes)

    def upload_bytes(self, job: Job) -> float:
        return float(self.ctx.model_bytes)

    def compute_fraction(self, job: Job) -> float:
        """The job's compute as a share of one dense job (1 unless masked or sliced)."""
        return 1.0

    def objective(self, jobs: list[Job], rows: torch.Tensor) -> Objective:
        """The local objective of jobs trained together (``rows``: their start models)."""
        return Objective()

    def on_arrival(self, job: Job) -> list[Job] | None:
        """An update arrived (trained); return the merged jobs when the server model was
        updated, else None."""
        raise NotImplementedError

    def on_merge(self, event: Event) -> list[Job] | None:
        """A ``merge`` event the policy scheduled; same return as ``on_arrival``."""
        return None

    def policy_state(self) -> State:
        return {}

    def load_policy_state(self, state: State) -> None:
        """Inverse of ``policy_state``."""

    # ------------------------------------------------------------------ helpers for policies
    def tau(self, job: Job) -> int:
        """Staleness τ = current version − the job's start version."""
        return self.version - job.version

    def release(self, job: Job) -> None:
        """The client is idle again (dispatched after this instant)."""
        self.jobs.pop(job.node, None)
        self.spent[job.node, 3] += self.clock.now - float(self.arrived_at[job.node])

    def mix_buffers(self, jobs: list[Job], weights: list[float], alpha: float) -> None:
        """Float buffers (BatchNorm statistics) ← (1 − α)·b + α·Σ w_j b_j / Σ w (integers:
        the maximum)."""
        if not self.buffers or not jobs:
            return
        total = sum(weights) or 1.0
        for name, value in self.buffers.items():
            if value.is_floating_point():
                mean = sum(w * j.buffers[name] for w, j in zip(weights, jobs, strict=True))
                self.buffers[name] = (1 - alpha) * value + alpha * mean / total
            else:
                self.buffers[name] = torch.stack([value, *(j.buffers[name] for j in jobs)]
                                                 ).max(0).values

    # ------------------------------------------------------------------ the loop
    def round(self, r: int) -> RoundResult:
        """Events until the policy updates the server model once."""
        if not self.started:
            self.started = True
            self.start()
        while True:
            self._refill_if_due()
            if not len(self.clock):
                raise RuntimeError("asynchronous run stalled: no job in flight and no event "
                                   "(concurrency and the policy dispatch nothing)")
            event = self.clock.pop()
            merged: list[Job] | None = None
            if event.kind == "computed":
                self._request_upload(self.jobs[event.node])
            elif event.kind == "arrival":
                job = self.jobs[event.node]
                avail = self.fclock.profile.availability
                if avail is not None and not avail.online(job.node, self.clock.now):
                    extras = self.traffic.extras  # offline when the upload would land: lost
                    extras["clients_offline"] = extras.get("clients_offline", 0.0) + 1
                    self.arrived_at[job.node] = self.clock.now
                    self.release(job)
                    continue
                if not job.trained:  # lazily: with every job still untrained
                    self._train_pending()
                job.arrived = True
                self.arrived_at[job.node] = self.clock.now
                self.traffic.up += job.up_bytes
                if not bool(torch.isfinite(job.row).all()):  # a corrupted upload: discarded
                    extras = self.traffic.extras
                    extras["updates_rejected"] = extras.get("updates_rejected", 0.0) + 1
                    if extras["updates_rejected"] > 10 * self.concurrency + 50:
                        raise UserError(
                            f"asynchronous run: {int(extras['updates_rejected'])} uploads in a "
                            f"row arrived non-finite and were rejected (server update "
                            f"{self.version + 1} never came): lower clock.message_corruption "
                            f"(now {self.ctx.config.clock.message_corruption}) or limit it to "
                            "clock.corrupt_nodes")
                    self.release(job)
                    continue
                merged = self.on_arrival(job)
            else:
                merged = self.on_merge(event)
            if merged is not None:
                return self._updated(merged)

    def _refill_if_due(self) -> None:
        """After the last event of an instant, dispatch idle clients up to the concurrency."""
        nxt = self.clock.peek()
        now = self.clock.now
        if nxt is not None and nxt.time <= now * (1 + EPS):
            return
        free = self.concurrency - len(self.jobs)
        if free <= 0:
            return
        idle = [i for i in range(self.ctx.data.nodes) if i not in self.jobs]
        avail = self.fclock.profile.availability
        if avail is not None:  # a device trace: only online clients take jobs (sim.traces)
            idle = [i for i in idle if avail.online(i, now)]
            if not idle and not len(self.clock):  # nothing in flight: wait for a client
                later = avail.next_online(now)
                if math.isinf(later):
                    raise UserError("clock.trace: no client is ever online again; give the "
                                    "devices later windows or a period")
                self.clock.now = later
                idle = [i for i in range(self.ctx.data.nodes)
                        if i not in self.jobs and avail.online(i, later)]
        if not idle:
            return
        if free < len(idle):
            rng = numpy_rng(self.ctx.seed, "dispatch", self.dispatches)
            idle = sorted(int(i) for i in rng.choice(idle, free, replace=False))
        self.dispatches += 1
        self._dispatch(idle)

    def _dispatch(self, nodes: list[int]) -> None:
        now = self.clock.now
        stream, need, received = self.download(nodes)
        keys = [int(self.job_count[i]) for i in nodes]
        ready = self.fclock.download(now, nodes, keys, stream, need)
        lr = self.ctx.lr(self.version)
        for node, key, got, nbytes in zip(nodes, keys, ready, received, strict=True):
            row, mask, rank = self.start_row(node)
            job = Job(node, self.version, key, lr, row, dict(self.buffers),
                      float(self.samples[node]), mask=mask, rank=rank)
            self.jobs[node] = job
            compute = self.fclock.compute_seconds(node, job.samples, float(self.steps[node]),
                                                  self.compute_fraction(job))
            self.clock.at(got + compute, "computed", node)
            self.spent[node, 0] += got - now
            self.spent[node, 1] += compute
            self.job_count[node] += 1
            self.traffic.down += nbytes
        self.traffic.server_out += sum(stream)

    def _request_upload(self, job: Job) -> None:
        job.up_bytes = self.upload_bytes(job)
        done = self.fclock.upload(self.clock.now, job.node, job.index, job.up_bytes)
        self.clock.at(done, "arrival", job.node)
        self.spent[job.node, 2] += done - self.clock.now

    def _train_pending(self) -> None:
        """Train every untrained job, grouped by learning rate, one trainer call per group."""
        todo = sorted((j for j in self.jobs.values() if not j.trained), key=lambda j: j.node)
        for lr in sorted({j.lr for j in todo}):
            group = [j for j in todo if j.lr == lr]
            dev = self.ctx.device
            nodes = torch.tensor([j.node for j in group], dtype=torch.int64)
            rows = torch.stack([j.row for j in group])
            buffers = ({n: torch.stack([j.buffers[n] for j in group]) for n in self.buffers}
                       if self.buffers else {})
            local = self.ctx.trainer.train(
                nodes.to(dev), rows, buffers, self.version, lr, self.objective(group, rows),
                width=self.width, batch_keys=torch.tensor([j.index for j in group]))
            for k, job in enumerate(group):
                trained = local.params[k]
                if self.keep == "delta":
                    job.row = rows[k] - trained
                else:
                    job.row = trained.clone()
                job.buffers = {n: v[k].clone() for n, v in local.buffers.items()}
                job.loss, job.acc = float(local.loss[k]), float(local.acc[k])
                job.trained = True

    def _updated(self, merged: list[Job]) -> RoundResult:
        """The record of one server update (train loss and accuracy of the merged jobs,
        weighted by shard size n_i as a synchronous round's); the version advances."""
        weights = [float(self.sizes[j.node]) for j in merged]
        total = sum(weights) or 1.0
        loss = sum(w * j.loss for w, j in zip(weights, merged, strict=True)) / total
        acc = sum(w * j.acc for w, j in zip(weights, merged, strict=True)) / total
        t = self.traffic
        extras = {"staleness": sum(self.tau(j) for j in merged) / max(len(merged), 1),
                  "merged": float(len(merged)), "server_bytes_out": t.server_out, **t.extras}
        now = self.clock.now
        res = RoundResult(loss, acc, bytes_up=int(t.up), bytes_down=int(t.down),
                          sim_time=now - self.last_update, extras=extras)
        self.version += 1
        self.last_update = now
        self.traffic = Traffic()
        return res

    # ------------------------------------------------------------------ records
    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        return self.x.unsqueeze(0), stack_buffers(self.buffers, 1), ["global"]

    def finite(self) -> bool:
        """Σx is finite iff every entry is (short of overflowing the sum, itself a sign of
        divergence): one reduction per update instead of a [P] mask."""
        return bool(torch.isfinite(self.x.sum()))

    def info(self) -> dict[str, object]:
        """Concurrency and each client's jobs and simulated seconds per activity."""
        names = ("download_s", "compute_s", "upload_s", "wait_s")
        cfg = self.ctx.config
        return {**attack_record(cfg.attack, self.ctx.data.nodes, cfg.seed),
                "concurrency": self.concurrency,
                "client_time": {f"client{i}": {"jobs": int(self.job_count[i]),
                                               **dict(zip(names, row, strict=True))}
                                for i, row in enumerate(self.spent.tolist())}}

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> State:
        jobs = [self.jobs[i] for i in sorted(self.jobs)]
        p = self.x.numel()

        def ints(values: list[int]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.int64)

        def floats(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64)

        pending: State = {
            "node": ints([j.node for j in jobs]), "version": ints([j.version for j in jobs]),
            "index": ints([j.index for j in jobs]), "rank": ints([j.rank for j in jobs]),
            "trained": ints([int(j.trained) for j in jobs]),
            "arrived": ints([int(j.arrived) for j in jobs]),
            "lr": floats([j.lr for j in jobs]), "samples": floats([j.samples for j in jobs]),
            "loss": floats([j.loss for j in jobs]), "acc": floats([j.acc for j in jobs]),
            "up_bytes": floats([j.up_bytes for j in jobs]),
            "row": (torch.stack([j.row for j in jobs]) if jobs
                    else self.x.new_zeros((0, p))),
            "report": ints([int(j.report) for j in jobs]),
            "has_mask": ints([int(j.mask is not None) for j in jobs]),
            "mask": (torch.stack([j.mask if j.mask is not None
                                  else torch.ones(p, dtype=torch.bool) for j in jobs]
                                 ).to(torch.uint8) if jobs
                     else torch.zeros((0, p), dtype=torch.uint8)),
            "buffers": {n: (torch.stack([j.buffers[n] for j in jobs]) if jobs
                            else v.new_zeros((0, *v.shape))) for n, v in self.buffers.items()},
        }
        t = self.traffic
        return {
            "x": self.x, "buffers": self.buffers, "clock": self.clock.state(),
            "links": self.fclock.state(), "jobs": pending, "job_count": self.job_count,
            "counters": ints([self.version, self.dispatches, int(self.started)]),
            "times": floats([self.last_update, t.up, t.down, t.server_out]),
            "spent": self.spent, "arrived_at": self.arrived_at,
            "policy": self.policy_state(),
        }

    def load_state(self, state: State) -> None:
        self.x = state["x"].clone()
        self.buffers = section(state, "buffers")
        self.clock.load_state(section(state, "clock"))
        links = section(state, "links")
        self.fclock.load_state({k: section(links, k) for k in ("server_up", "server_down")})
        self.job_count = state["job_count"].clone()
        self.version, self.dispatches, started = (int(v) for v in state["counters"].tolist())
        self.started = bool(started)
        self.last_update, up, down, out = (float(v) for v in state["times"].tolist())
        self.traffic = Traffic(up, down, out)
        self.spent = state["spent"].clone()
        self.arrived_at = state["arrived_at"].clone()
        pending = section(state, "jobs")
        buffers = section(pending, "buffers")
        self.jobs = {}
        for k, node in enumerate(pending["node"].tolist()):
            mask = pending["mask"][k].bool() if int(pending["has_mask"][k]) else None
            self.jobs[node] = Job(
                node, int(pending["version"][k]), int(pending["index"][k]),
                float(pending["lr"][k]), pending["row"][k].clone(),
                {n: v[k].clone() for n, v in buffers.items()}, float(pending["samples"][k]),
                bool(pending["trained"][k]), bool(pending["arrived"][k]),
                float(pending["loss"][k]), float(pending["acc"][k]),
                float(pending["up_bytes"][k]), mask, int(pending["rank"][k]),
                bool(pending["report"][k]))
        self.load_policy_state(section(state, "policy"))
