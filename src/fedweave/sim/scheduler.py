"""The virtual-time scheduler: one event queue for every simulated run.

Events are (time, seq, kind, node, tag, value): ``kind`` names what happens (a client job
arrives at the server, a peer finishes a local step, ...), ``node`` who, ``tag`` an integer of
the policy's (e.g. the server version a job started from) and ``value`` a float of the
policy's (e.g. the job's duration). They pop in (time, insertion) order, so equal times keep
the order the policy scheduled them in, and nothing depends on wall-clock time or payloads.

Policies drive it: a synchronous federated round schedules each cohort member's arrival
(download + compute + upload) and ends when the last arrives (stragglers cost time); an
asynchronous algorithm dispatches jobs and reacts to each arrival; decentralized peers keep one
"step" event each, at (k+1)·τ_i. ``pop_together`` takes the events that happen at the same
instant (relative tolerance ``EPS``) so simultaneous steps run as one batch. ``state`` and
``load_state`` make the queue part of a checkpoint.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import torch

from fedweave.core.state import State

EPS = 1e-9


@dataclass(order=True)
class Event:
    time: float
    seq: int
    kind: str = field(compare=False)
    node: int = field(compare=False)
    tag: int = field(compare=False, default=0)
    value: float = field(compare=False, default=0.0)


class Scheduler:
    """A deterministic virtual-time event queue; ``now`` is the time of the last event taken
    (or set by ``advance``)."""

    def __init__(self, kinds: tuple[str, ...]) -> None:
        self.kinds = kinds
        self.now = 0.0
        self._heap: list[Event] = []
        self._seq = 0

    def at(self, time: float, kind: str, node: int, tag: int = 0, value: float = 0.0) -> Event:
        """Schedule an event at virtual time ``time``."""
        if kind not in self.kinds:
            raise ValueError(f"unknown event kind {kind!r} (have {self.kinds})")
        event = Event(float(time), self._seq, kind, int(node), int(tag), float(value))
        self._seq += 1
        heapq.heappush(self._heap, event)
        return event

    def peek(self) -> Event | None:
        return self._heap[0] if self._heap else None

    def pop(self) -> Event:
        """The earliest event; advances ``now`` to it. ``IndexError`` when empty."""
        event = heapq.heappop(self._heap)
        self.now = max(self.now, event.time)
        return event

    def pop_together(self) -> list[Event]:
        """The earliest event and every other at the same instant (time ≤ t·(1 + EPS)), in
        insertion order."""
        first = self.pop()
        out = [first]
        while self._heap and self._heap[0].time <= first.time * (1 + EPS):
            out.append(heapq.heappop(self._heap))
        return sorted(out, key=lambda e: e.seq)

    def advance(self, time: float) -> None:
        self.now = max(self.now, float(time))

    def pending(self, kind: str | None = None) -> list[Event]:
        """Queued events (of ``kind``), in pop order."""
        return sorted(e for e in self._heap if kind is None or e.kind == kind)

    def cancel(self, event: Event) -> None:
        self._heap.remove(event)
        heapq.heapify(self._heap)

    def clear(self, kind: str | None = None) -> None:
        self._heap = [e for e in self._heap if kind is not None and e.kind != kind]
        heapq.heapify(self._heap)

    def __len__(self) -> int:
        return len(self._heap)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> State:
        events = self.pending()
        return {
            "now": torch.tensor(self.now, dtype=torch.float64),
            "next_seq": torch.tensor(self._seq, dtype=torch.int64),
            "time": torch.tensor([e.time for e in events], dtype=torch.float64),
            "seq": torch.tensor([e.seq for e in events], dtype=torch.int64),
            "kind": torch.tensor([self.kinds.index(e.kind) for e in events], dtype=torch.int64),
            "node": torch.tensor([e.node for e in events], dtype=torch.int64),
            "tag": torch.tensor([e.tag for e in events], dtype=torch.int64),
            "value": torch.tensor([e.value for e in events], dtype=torch.float64),
        }

    def load_state(self, state: State) -> None:
        self.now = float(state["now"])
        self._seq = int(state["next_seq"])
        self._heap = [
            Event(float(t), int(s), self.kinds[int(k)], int(n), int(g), float(v))
            for t, s, k, n, g, v in zip(state["time"].tolist(), state["seq"].tolist(),
                                        state["kind"].tolist(), state["node"].tolist(),
                                        state["tag"].tolist(), state["value"].tolist(),
                                        strict=True)]
        heapq.heapify(self._heap)
