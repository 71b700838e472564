"""When peers step: lock-step rounds, or event-driven rounds on the shared virtual-time scheduler
(with the gradients of later steps computed ahead, ``lookahead.py``).

One round is one epoch: every node takes S = max_i ⌈n_i/b_i⌉ steps. Synchronous (default): all
nodes step together and messages arrive at once; a step lasts the slowest node's compute plus
the slowest transfer of its exchanges. Asynchronous (``clock.asynchronous``): node i's k-th step
finishes at virtual time (k+1)·τ_i, τ_i = seconds_per_sample_i · b; nodes finishing at the same
time step together; a message sent at T arrives at T + latency + bytes / min(up_i, down_j) and
is used by the receiver from its next combine on (stale copies). A round ends at virtual time
(r+1)·S·max_i τ_i. With equal speeds and zero transfer time this is the synchronous run.

Train/idle periods (``clock.train_fraction`` f, ``clock.phase``): node i's epoch period is
T_i = S·τ_i/f, its first starts at φ_i (0, or ~ U(0, T_i) from ``numpy_rng(seed,
"clock-phase")``), it trains in the first S·τ_i of each period and is idle for the rest, so its
k-th step finishes at φ_i + ⌊k/S⌋·T_i + (k mod S + 1)·τ_i, its epoch e ends at
φ_i + e·T_i + T_i, and a round ends at (r+1)·max_i T_i.

Time runs on ``fedweave.sim.scheduler``: asynchronous peers keep one "step" event each, and one
"epoch_end" event with ``epoch_swap``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fedweave.sim.clock import epoch_phases, node_profiles
from fedweave.sim.scheduler import EPS, Scheduler
from fedweave.training.batches import local_steps

if TYPE_CHECKING:
    from fedweave.algorithms.decentralized.lookahead import GradientCache
    from fedweave.context import RunContext
    from fedweave.core.population import Buffers
    from fedweave.distributed.placement import NodePartition
    from fedweave.sim.clock import NodeProfile
    from fedweave.training.objectives import Objective
    from fedweave.training.protocol import Batches, GradientEngine, StepOutput


class Timing:
    """Lock-step and event-driven rounds (a part of ``DecentralizedAlgorithm``): the round
    drivers call ``_step`` with the groups of nodes that step together and ``_swap_epoch``
    at node epoch ends."""

    n: int
    up: torch.Tensor
    async_: bool
    profile: NodeProfile
    steps_done: torch.Tensor
    epoch_swap: bool

    ahead: GradientCache
    #: up to this many held rows the companions are found in Python, above on tensors
    python_rows = 64
    x: torch.Tensor
    buffers: Buffers
    nodes: torch.Tensor
    engine: GradientEngine
    objective: Objective
    part: NodePartition

    if TYPE_CHECKING:  # provided by the algorithm and by Exchange
        def _step(self, groups: list[tuple[torch.Tensor, int, int]], now: float,
                  stats: dict[str, torch.Tensor]) -> float: ...

        def _swap_epoch(self, ended: torch.Tensor, now: float) -> None: ...

        def _deliver(self, now: float) -> None: ...

        def batches(self, epoch: int) -> Batches: ...

    def _init_timing(self, ctx: RunContext) -> None:
        cfg = ctx.config
        self.clock = Scheduler(("step", "epoch_end"))
        self.profile = node_profiles(cfg.clock, self.n, cfg.seed)
        self.S = int(local_steps(cfg.train, ctx.data.sizes).max())
        self.b = torch.minimum(ctx.data.sizes, torch.tensor(cfg.train.batch_size))
        self.tau = self.profile.seconds_per_sample * self.b.to(torch.float64)
        self.async_ = cfg.clock.asynchronous
        #: train/idle periods: T_i = S·τ_i / train_fraction, first period starting at φ_i
        self.idle = cfg.clock.train_fraction < 1 or cfg.clock.phase != "zero"
        self.epoch_period = self.S * self.tau / cfg.clock.train_fraction
        self.phase = epoch_phases(cfg.clock, cfg.seed, self.epoch_period)
        #: the current asynchronous round's end (gradients may be computed ahead until then)
        self._look_end: float | None = None
        #: τ, φ and T as Python floats (``_step_time``)
        self._floats: tuple[list[float], list[float], list[float]] | None = None

    def _round_sync(self, r: int, stats: dict[str, torch.Tensor]) -> float:
        """Every node steps S times in lock step; a step lasts the slowest node's compute
        plus the slowest transfer of its exchanges."""
        everyone = self.up.clone()  # crashed nodes do not step
        sim = 0.0
        compute = float(self.tau.max())
        for t in range(self.S):
            sim += compute + self._step([(everyone, r, t)], 0.0, stats)
        if self.epoch_swap:
            self._swap_epoch(everyone, 0.0)
        self.clock.now += sim
        return sim

    def _step_time(self, node: int, k: int) -> float:
        """When node's k-th (0-based) local step finishes: (k+1)·τ_i, or with train/idle
        periods φ_i + ⌊k/S⌋·T_i + (k mod S + 1)·τ_i. In Python floats (the same float64
        operations as on the tensors, without a tensor operation per term on every event)."""
        if self._floats is None:
            self._floats = (self.tau.tolist(), self.phase.tolist(), self.epoch_period.tolist())
        tau, phase, period = self._floats
        if not self.idle:
            return (k + 1) * tau[node]
        e, t = divmod(k, self.S)
        return phase[node] + e * period[node] + (t + 1) * tau[node]

    def _epoch_end(self, node: int, e: int) -> float:
        """When node's epoch e ends: the finish of its last step, or with train/idle periods
        φ_i + e·T_i + T_i (the same float as that step's time when there is no idle part)."""
        if not self.idle:
            return float((e + 1) * self.S * self.tau[node])
        start = self.phase[node] + e * self.epoch_period[node]
        return float(start + self.epoch_period[node])

    def _next_step(self, node: int) -> None:
        """Queue node's next local step (``_step_time``)."""
        self.clock.at(self._step_time(node, int(self.steps_done[node])), "step", node)

    def _round_end(self, r: int) -> float:
        if not self.idle:
            return (r + 1) * self.S * float(self.tau.max())
        return (r + 1) * float(self.epoch_period.max())

    def _round_async(self, r: int, stats: dict[str, torch.Tensor]) -> float:
        """Event-driven on the scheduler: the earliest events (and every other at the same
        instant) run together, after delivering the messages that have arrived: first the
        steps, then the epoch swaps (``epoch_end`` events, tag = the node's epoch); a round
        ends at virtual time (r+1)·max_i T_i (T_i = S·τ_i without idle periods)."""
        end = self._round_end(r)
        start = self.clock.now
        self._look_end = end
        self.ahead.clear()
        if not self.clock.pending("step"):
            for i in range(self.n):
                self._next_step(i)
                if self.epoch_swap:
                    self.clock.at(self._epoch_end(i, 0), "epoch_end", i, tag=0)
        while (head := self.clock.peek()) is not None and head.time <= end * (1 + EPS):
            events = self.clock.pop_together()
            now = events[0].time
            self._deliver(now)
            steps = [e for e in events if e.kind == "step"]
            groups: dict[tuple[int, int], torch.Tensor] = {}
            for event in steps:
                k = int(self.steps_done[event.node])
                key = (k // self.S, k % self.S)
                groups.setdefault(key, torch.zeros(self.n, dtype=torch.bool))
                groups[key][event.node] = True
            if groups:
                self._step([(m, e, t) for (e, t), m in sorted(groups.items())], now, stats)
            for event in steps:
                self._next_step(event.node)
            ended = [e for e in events if e.kind == "epoch_end"]
            if ended:
                mask = torch.zeros(self.n, dtype=torch.bool)
                mask[[e.node for e in ended]] = True
                self._swap_epoch(mask, now)
                for event in ended:
                    self.clock.at(self._epoch_end(event.node, event.tag + 1), "epoch_end",
                                  event.node, tag=event.tag + 1)
        self._look_end = None
        self.ahead.clear()  # every kept gradient was used by its step in this round
        self.clock.now = end
        return end - start

    def _group_grads(self, held: torch.Tensor, epoch: int, t: int,
                     stepping: torch.Tensor | None) -> StepOutput:
        """The engine's gradients of the ``held`` rows for step key (epoch, t); on the
        asynchronous clock also of the companions that take the same step later in the round,
        kept until their own event (``lookahead.py``; the same numbers, fewer engine calls)."""
        bt = self.batches(epoch)
        key = (epoch, t)
        look = self._companions(key, stepping) if stepping is not None else []
        cached = self.ahead.usable(held, key, self.x) if self.ahead.rows else []
        if not look and not cached:
            self.ahead.calls += 1
            return self.engine.grads(self.x, self.buffers, bt.idx[:, t], bt.weight[:, t],
                                     held, key, self.nodes, self.objective.data)
        need = held.clone()
        need[cached] = False
        out = None
        if bool(need.any()):
            compute = need.clone()
            compute[look] = True
            out = self.engine.grads(self.x, self.buffers, bt.idx[:, t], bt.weight[:, t],
                                    compute, key, self.nodes, self.objective.data)
            self.ahead.calls += 1
            if look:
                self.ahead.keep(look, key, self.x, out)
                if out.buffers:  # the companions' buffers are written at their own step
                    kept = {k: v.clone() for k, v in out.buffers.items()}
                    for k, v in kept.items():
                        v[look] = self.buffers[k][look]
                    out.buffers = kept
        out, _ = self.ahead.take(cached, out, self.x, self.buffers)
        return out

    def _companions(self, key: tuple[int, int], stepping: torch.Tensor) -> list[int]:
        """Held rows not stepping now whose next step has ``key`` and comes before this
        round's end (asynchronous clock only)."""
        end = self._look_end
        if end is None or not self.ahead.enabled:
            return []
        lo, hi = self.part.lo, self.part.hi
        k = self.steps_done[lo:hi]
        if hi - lo <= self.python_rows:  # in Python (a tensor operation costs more per event)
            busy = stepping[lo:hi].tolist()
            rows = [r for r, kr in enumerate(k.tolist())
                    if not busy[r] and divmod(kr, self.S) == key]
        else:
            same = (k // self.S == key[0]) & (k % self.S == key[1]) & ~stepping[lo:hi]
            rows = torch.nonzero(same).flatten().tolist()
        out = []
        for row in rows:
            if row not in self.ahead.rows and \
                    self._step_time(lo + row, int(k[row])) <= end * (1 + EPS):
                out.append(row)
        return out
