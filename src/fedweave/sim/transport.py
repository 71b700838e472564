"""Messages between peers on the virtual clock: transfer times, faults, the in-flight queue.

A message travels on a directed slot (from ``slot_own[s]`` to ``slot_nbr[s]``) and takes
``latency_s + bytes / min(up_sender, down_receiver)`` seconds, plus on the asynchronous clock a
seeded U(0, ``clock.latency_jitter``) per message (``sim.clock.latency_jitter``). Faults are
seeded draws (``sim.clock``): an exchange lost with probability ``clock.link_drop`` is never
delivered (the receiver keeps its stale copy); an edge whose swap exceeds ``clock.swap_timeout``
is *late* (the algorithm drops it). Under a device trace with online windows a message
travels only when both its ends are online when it is sent and when it arrives
(``reachable``). Asynchronous messages wait in the queue until their arrival
time and are delivered in (arrival, send) order, in *waves* of distinct slots (a slot that receives
twice is updated twice, in order). The queue is part of the checkpoint, in a canonical
(arrival, slot) order that does not depend on how many processes hold the slots.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from fedweave.config import ClockConfig
from fedweave.core.state import State
from fedweave.sim.clock import (
    NodeProfile,
    exchange_late,
    latency_jitter,
    link_dropped,
    transfer_time,
)
from fedweave.sim.scheduler import EPS

Messages = dict[str, torch.Tensor]


@dataclass
class InFlight:
    time: float
    seq: int
    slot: int                  # receiving slot, local index of the process that holds it
    msg: dict[str, torch.Tensor]


class Transport:
    """Transfer times, fault draws and the in-flight queue of one run's peer messages."""

    def __init__(self, clock: ClockConfig, profile: NodeProfile, seed: int,
                 slot_own: torch.Tensor, slot_nbr: torch.Tensor, edges: torch.Tensor,
                 msg_bytes: int) -> None:
        self.clock, self.profile, self.seed = clock, profile, seed
        self.slot_own, self.slot_nbr, self.msg_bytes = slot_own, slot_nbr, msg_bytes
        #: per undirected edge: its swap misses ``clock.swap_timeout`` (profiles are static)
        self.late = torch.tensor(
            [exchange_late(clock, profile, 0, int(i), int(j), msg_bytes)
             for i, j in edges.tolist()], dtype=torch.bool)
        self.queue: list[InFlight] = []
        self._seq = 0

    # ------------------------------------------------------------------ times and faults
    def transfer(self, slots: torch.Tensor) -> torch.Tensor:
        """Seconds per message on the global ``slots``."""
        own, nbr = self.slot_own[slots], self.slot_nbr[slots]
        bw = torch.minimum(self.profile.bandwidth_up[own], self.profile.bandwidth_down[nbr])
        return transfer_time(self.msg_bytes, bw, self.clock.latency_s)

    def arrival(self, slots: torch.Tensor, steps: torch.Tensor, now: float) -> torch.Tensor:
        """When the messages sent at ``now`` on the global ``slots`` arrive: ``transfer`` plus
        each message's ``clock.latency_jitter`` draw, keyed by its sender's step ``steps[own]``
        (``steps``: [N]) and its two ends."""
        arrive = now + self.transfer(slots)
        if self.clock.latency_jitter:
            own, nbr = self.slot_own[slots].tolist(), self.slot_nbr[slots].tolist()
            arrive = arrive + torch.tensor(
                [latency_jitter(self.clock, self.seed, int(steps[i]), i, j)
                 for i, j in zip(own, nbr, strict=True)], dtype=arrive.dtype)
        return arrive

    def longest(self, slots: torch.Tensor) -> float:
        """The slowest of the messages on ``slots`` (0 without latency and bytes)."""
        if self.clock.latency_s == 0 and self.msg_bytes == 0:
            return 0.0
        return float(self.transfer(slots).max())

    def lost(self, slots: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
        """bool per slot: the exchange at the owner's step ``steps[own]`` is lost
        (Bernoulli(``clock.link_drop``) keyed by (seed, step, edge), the same both ways)."""
        out = torch.zeros(len(slots), dtype=torch.bool)
        if not self.clock.link_drop:
            return out
        for n, s in enumerate(slots.tolist()):
            i, j = int(self.slot_own[s]), int(self.slot_nbr[s])
            out[n] = link_dropped(self.clock, self.seed, int(steps[i]), i, j)
        return out

    def reachable(self, slots: torch.Tensor, steps: torch.Tensor, now: float) -> torch.Tensor:
        """bool per global slot: under a device trace (``profile.availability``) the message
        sent at ``now`` can travel, i.e. both its ends are online at ``now`` and at its
        ``arrival`` (``Availability.online_near``); always True without one."""
        avail = self.profile.availability
        ok = torch.ones(len(slots), dtype=torch.bool)
        if avail is None or not len(slots):
            return ok
        arrive = self.arrival(slots, steps, now).tolist()
        own, nbr = self.slot_own[slots].tolist(), self.slot_nbr[slots].tolist()
        for n, (i, j, t) in enumerate(zip(own, nbr, arrive, strict=True)):
            ok[n] = all(avail.online_near(node, at) for node in (i, j) for at in (now, t))
        return ok

    # ------------------------------------------------------------------ the queue
    def post(self, slots: list[int], msg: Messages, arrive: torch.Tensor) -> None:
        """Queue messages for the (local) receiving ``slots``, arriving at ``arrive``."""
        for n, slot in enumerate(slots):
            self.queue.append(InFlight(float(arrive[n]), self._seq, slot,
                                       {k: v[n] for k, v in msg.items()}))
            self._seq += 1

    def deliver(self, now: float) -> Iterator[tuple[torch.Tensor, Messages]]:
        """Waves (slots, messages) of the queued messages with arrival ≤ now, in (arrival,
        send) order; each wave has distinct slots."""
        ready = sorted((p for p in self.queue if p.time <= now + EPS),
                       key=lambda p: (p.time, p.seq))
        if not ready:
            return
        self.queue = [p for p in self.queue if p.time > now + EPS]
        while ready:
            seen: set[int] = set()
            wave: list[InFlight] = []
            rest: list[InFlight] = []
            for p in ready:
                (rest if p.slot in seen else wave).append(p)
                seen.add(p.slot)
            slots = torch.tensor([p.slot for p in wave])
            yield slots, {k: torch.stack([p.msg[k] for p in wave]) for k in wave[0].msg}
            ready = rest

    # ------------------------------------------------------------------ checkpoints
    def state(self, held_slots: torch.Tensor, keys: tuple[str, ...], width: int,
              like: torch.Tensor, gather: Callable[[Messages], Messages]) -> State:
        """The queue as tensors: arrival times, global receiving slots and payloads, gathered
        over processes (``gather``) and put in canonical (arrival, slot) order."""
        q = self.queue
        fields = {
            "time": torch.tensor([m.time for m in q], dtype=torch.float64),
            "slot": held_slots[[m.slot for m in q]].view(-1),
            **{f"msg.{k}": torch.stack([m.msg[k] for m in q]) if q
               else like.new_zeros(0, width) for k in keys},
        }
        fields = gather(fields)
        order = torch.argsort(fields["slot"], stable=True)
        order = order[torch.argsort(fields["time"][order], stable=True)]
        if not len(order):
            return {}
        fields = {k: v[order.to(v.device)] for k, v in fields.items()}
        return {"time": fields["time"], "slot": fields["slot"],
                "msg": {k[4:]: v for k, v in fields.items() if k.startswith("msg.")}}

    def load_state(self, state: State, local_slot: torch.Tensor, device: torch.device) -> None:
        """Inverse of ``state``: keep the messages whose receiving slot this process holds."""
        self.queue = []
        if "time" not in state:
            return
        msgs = {k: v.to(device) for k, v in state["msg"].items()}
        held = local_slot[state["slot"].cpu()]
        for n, (t, s) in enumerate(zip(state["time"].tolist(), held.tolist(), strict=True)):
            if s >= 0:
                self.queue.append(InFlight(t, n, s, {k: v[n] for k, v in msgs.items()}))
        self._seq = len(state["time"])
