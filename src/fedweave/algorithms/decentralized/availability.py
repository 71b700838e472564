"""Peers under a device trace's online windows (``clock.trace: file.json``,
``fedweave.sim.traces``): the same file and the same virtual time base as federated runs.

* **Synchronous rounds**: a node offline at the round's start (the virtual time the previous
  rounds took) sits the round out exactly like a crashed node (``clock.node_crash``): it
  neither steps nor exchanges and keeps its model, its edges leave the live graph and W is
  recomputed on it, so its neighbours mix only with online nodes, weights re-normalised. When
  no node is online the round starts at the first instant one is (the wait counts in the
  round's virtual time), as a federated round's cohort does.
* **Asynchronous (event-driven) rounds**: node i's own clock runs only while it is online: the
  step (and epoch end) that the timing puts at u seconds of its clock happens at virtual time
  A_i⁻¹(u) (``Availability.online_clock``: A_i(t) = online seconds of i in [0, t]), so it
  computes nothing while offline and its events wait for its next window. A message sent at T
  and arriving at T' travels only when both ends are online at T and at T'
  (``Transport.reachable``); otherwise it is lost like a dropped exchange (the receiver keeps
  its stale copy, counted in ``exchanges_lost``, not in ``bytes_down``).

In both, a run in which no node is ever online again is one :class:`UserError` line, and
``nodes_offline`` counts the nodes offline at each round's start. Everything is a function of
the trace and of the checkpointed clock, so runs resume exactly.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from fedweave.algorithms.decentralized.exchange import Exchange
from fedweave.algorithms.decentralized.timing import Timing
from fedweave.errors import UserError
from fedweave.sim.traces import wait_until_online

if TYPE_CHECKING:
    from fedweave.context import RunContext


class PeerAvailability(Exchange, Timing):
    """Online windows on the peers' clocks (a part of ``DecentralizedAlgorithm``)."""

    def _init_exchange(self, ctx: RunContext) -> None:
        super()._init_exchange(ctx)
        #: nodes offline at the latest round's start (``nodes_offline``)
        self.offline = 0
        if self.profile.availability is not None:
            self.fast = False  # as with node crashes: messages travel, the live graph changes

    def _await_online(self, up: torch.Tensor) -> tuple[torch.Tensor, float]:
        """At a round's start: the nodes that may run it (``up`` without the offline ones on
        the synchronous clock) and the virtual seconds waited for the first online node."""
        avail = self.profile.availability
        if avail is None:
            return up, 0.0
        if self.async_:
            if math.isinf(avail.next_online(self.clock.now)):
                raise UserError("clock.trace: no node is ever online again; give the devices "
                                "later windows or a period")
            self.offline = self.n - len(avail.online_nodes(self.clock.now))
            return up, 0.0
        start = self.clock.now
        online = torch.zeros(self.n, dtype=torch.bool)
        online[wait_until_online(avail, self.clock, "node")] = True
        self.offline = int((~online).sum())
        return up & online, self.clock.now - start

    def _step_time(self, node: int, k: int) -> float:
        """The timing's finish of node's k-th step, on its online clock."""
        t = super()._step_time(node, k)
        avail = self.profile.availability
        return t if avail is None else avail.online_clock(node, t)

    def _epoch_end(self, node: int, e: int) -> float:
        """The timing's end of node's epoch e, on its online clock."""
        t = super()._epoch_end(node, e)
        avail = self.profile.availability
        return t if avail is None else avail.online_clock(node, t)

    def _send(self, sent: torch.Tensor, now: float) -> None:
        """Asynchronous messages whose ends are not both online at sending and arrival are
        lost (the synchronous clock has taken offline nodes out of the live graph)."""
        if self.async_ and self.profile.availability is not None and len(sent):
            ok = self.transport.reachable(sent, self.steps_done, now)
            lost = int((~ok).sum())
            if lost:
                self.exchanges_lost += lost
                self.bytes_down -= lost * self.msg_bytes
                sent = sent[ok]
                if not len(sent):
                    return
        super()._send(sent, now)
