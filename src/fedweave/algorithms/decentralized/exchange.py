"""The message exchange of peers: which slots are due, one- and two-way sends, the outbox,
faults, byte counts and payload corruption.

A slot is due at its owner's global step k when ``k mod K == offset[s]`` (K =
``algorithm.exchange_period``; offsets per directed slot from reference system 001's node list
when ``topology.file`` gives them (``algorithm.offsets``: auto or file), else per undirected
edge from ``exchange_schedule``, a proper edge colouring (``colouring``, or auto)). A due
slot sends ``message`` to the other end, which gets it through ``receive`` after the transfer
time (``fedweave.sim.transport``).

Two-way exchanges (``algorithm.exchange: two_way``, reference system 001): every node keeps an
*outbox* per slot, the message it published at the end of its last step (initially the initial
model for ``x`` and zeros for other keys, what receivers hold before any exchange). A step is
then local update → combine (with the copies received so far) → publish → exchange: on a due
slot i→j, i's outbox goes to j and j's outbox comes back to i (j answers whatever it is doing,
e.g. with its frozen model while idle). The received values are used from the next step on.
``epoch_swap`` (D-SGD; the reference's ``diff()``): at the end of each node epoch the node
swaps outboxes with every live neighbour, both ways (no fault draws).

Faults (``fedweave.sim.clock``, ``fedweave.robust.peers``): an exchange lost with probability
``clock.link_drop`` is not delivered (the receiver keeps its stale copy); an edge whose exchange
misses ``clock.swap_timeout`` is dropped for the rest of the run, W is recomputed on the live
graph and the edge's duals leave the sums (reference system 001 stops the node instead; we keep
training). Attacked and corrupted payloads are made on the way out; a non-finite message never
reaches a copy (the receiver mixes its own model in its place).

The fast path: a *mixing* algorithm (``mixes = True``, whose ``combine`` is Σ_j W_ij m_j of the
models) that keeps the default ``receive``, runs synchronously, exchanges every edge every step
one way, with no faults, no late edges and no robust aggregator, mixes the current rows with
W @ x in one process: then no message is built, sent or received (bytes are still counted).
An algorithm that overrides ``receive`` never takes it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from fedweave.algorithms.decentralized.graph import PeerGraph
from fedweave.distributed import is_writer
from fedweave.errors import UserError
from fedweave.robust.peers import PeerFaults
from fedweave.sim.transport import Transport
from fedweave.topology import directed_offsets, exchange_schedule, file_schedule

if TYPE_CHECKING:
    from fedweave.context import RunContext
    from fedweave.sim.clock import NodeProfile


log = logging.getLogger("fedweave")


class Exchange(PeerGraph):
    """Due slots, sends, delivery, faults and byte counts over the slots of ``PeerGraph`` (a
    part of ``DecentralizedAlgorithm``; ``_init_exchange`` runs after the graph and the
    timing)."""

    config: Any
    x: torch.Tensor
    x_before: torch.Tensor
    mixes: ClassVar[bool]
    steps_done: torch.Tensor
    profile: NodeProfile
    async_: bool
    alone: set[int]

    if TYPE_CHECKING:  # provided by the algorithm
        def model_labels(self) -> list[str]: ...

    def _init_exchange(self, ctx: RunContext) -> None:
        cfg = ctx.config
        #: K of ``exchange_period`` (1 for algorithms that schedule exchanges their own way)
        self.period = int(getattr(self.config, "exchange_period", 1))
        offsets = getattr(self.config, "offsets", None)
        if offsets == "file" or (offsets == "auto" and file_schedule(cfg.topology)):
            self.offset = directed_offsets(cfg.topology, self.edges, self.period)
        else:
            self.offset = self.schedule_offsets().repeat(2)
        self.two_way = getattr(self.config, "exchange", "one_way") == "two_way"
        self.epoch_swap = bool(getattr(self.config, "epoch_swap", False))
        self.edges_dropped = 0
        self.bytes_up = self.bytes_down = self.exchanges_lost = 0
        self.msg_bytes = self.message_bytes()
        clock = cfg.clock
        self.transport = Transport(clock, self.profile, cfg.seed, self.slot_own, self.slot_nbr,
                                   self.edges, self.msg_bytes)
        self.late = self.transport.late
        self.faults = PeerFaults(cfg.attack, clock, self.n, cfg.seed)  # attacks, corruption
        self._check_faults()
        #: the fast path (see the module docstring): W @ x on the current rows, no messages
        self.fast = (self.mixes and type(self).receive is Exchange.receive
                     and not self.async_ and self.period == 1 and not self.two_way
                     and clock.link_drop == 0 and not bool(self.late.any())
                     and not self.faults.active and not clock.node_crash
                     and cfg.aggregator.name is None)
        #: two-way exchanges: what each held slot's owner published after its last step
        self.outbox: dict[str, torch.Tensor] = {}

    def _init_outbox(self) -> None:
        if self.two_way:
            init_params = self.ctx.init_params
            for key in self.message_keys:
                init = init_params if key == "x" else torch.zeros_like(init_params)
                self.outbox[key] = init.to(self.x.device).expand(len(self.slots), -1).clone()

    # ------------------------------------------------------------------ hooks

    def schedule_offsets(self) -> torch.Tensor:
        """Per undirected edge offset of its exchanges (``exchange_schedule``)."""
        return exchange_schedule(self.edges, self.n, self.period)


    def due(self, k: torch.Tensor) -> torch.Tensor:
        """bool [2E], every slot (replicated): slots whose owner, at its global step
        ``k[slot_own]`` (``k``: [N], CPU), exchanges now (an offset of −1: never)."""
        return (k[self.slot_own] % self.period) == self.offset


    def message(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        """What ``own[slots]`` send on ``slots``: {key: [len(slots), P]}. Default: the model."""
        return {"x": self.x[self.own[slots]]}


    def receive(self, slots: torch.Tensor, msg: dict[str, torch.Tensor]) -> None:
        """Slots (receiver side) get the messages. Default: keep copies."""
        for key, value in msg.items():
            self.copies[key][slots] = value


    def message_bytes(self) -> int:
        """Bytes of one message on one slot (counted in ``bytes_up``/``bytes_down`` and in the
        transfer times): dense, len(message_keys) · P · element size. Algorithms that compress
        their messages override it."""
        return len(self.message_keys) * self.ctx.layout.total * self.ctx.init_params.element_size()

    # ------------------------------------------------------------------ sending

    def _check_faults(self) -> None:
        attack = self.ctx.config.attack
        if self.faults.model_attack and "x" not in self.message_keys:
            raise UserError(f"attack.name={attack.name} corrupts the model a peer sends; "
                            f"algorithm.name={self.config.name} sends no model")
        if attack.name == "alie" and self.part.split:
            raise UserError("attack.name=alie needs every node's update on every process: use "
                            "launcher.exchange=all_gather")
        if self.ctx.config.clock.node_crash and self.async_:
            raise UserError("clock.node_crash is simulated for synchronous rounds: set "
                            "clock.asynchronous=false")


    def _publish(self, active: torch.Tensor) -> None:
        """Two-way exchanges: the active held nodes' slots publish their current messages."""
        slots = torch.nonzero(active[self.own]).flatten()
        if len(slots) == 0:
            return
        for key, value in self.message(slots).items():
            self.outbox[key][slots] = value


    def _exchange(self, due: torch.Tensor, k: torch.Tensor, now: float) -> tuple[float, bool]:
        """Faults, byte counts and delivery of the ``due`` slots' messages (bool [2E]); a
        two-way exchange also brings the other end's outbox back (the same fault draw)."""
        slots = torch.nonzero(due).flatten()
        if len(slots) == 0:
            return 0.0, self.fast and bool(self.alive.sum() == 0)
        ways = 2 if self.two_way else 1
        self.bytes_up += ways * len(slots) * self.msg_bytes
        if self.fast and not self.part.split:  # W @ x mixes the current rows: no messages
            self.bytes_down += len(slots) * self.msg_bytes
            return self.transport.longest(slots), True
        late = self.late[self.slot_edge[slots]]
        keep = ~late
        newly = self.slot_edge[slots][late & self.alive[self.slot_edge[slots]]].unique()
        dropped = len(newly) > 0
        if dropped:  # swap_timeout: the edge is gone for the rest of the run
            self.alive[newly] = False
            self.edges_dropped += len(newly)
        lost = self.transport.lost(slots, k) & keep
        self.exchanges_lost += int(lost.sum())
        keep &= ~lost
        if dropped:
            self._set_mixing()
        both = torch.cat([slots, self.slot_rev[slots]]) if self.two_way else slots
        longest = self.transport.longest(both)
        slots = slots[keep]
        if len(slots) == 0:
            return longest, False
        self.bytes_down += ways * len(slots) * self.msg_bytes
        if self.two_way:  # both ends starting at once is one swap
            slots = torch.cat([slots, self.slot_rev[slots]]).unique()
        self._send(slots, now)
        return longest, self.fast


    def _send(self, sent: torch.Tensor, now: float) -> None:
        """Messages of the ``sent`` slots (global, sorted) to the slots ``rev`` at the other
        end: received at once (synchronous) or queued until their arrival time."""
        held = sent[self.local_slot[sent] >= 0]  # global slots this process sends
        mine = self.local_slot[held].to(self.x.device)
        msg = ({k: v[mine] for k, v in self.outbox.items()} if self.two_way
               else self.message(mine))
        payload = torch.cat([msg[key] for key in self.message_keys], 1)
        if self.faults.active:
            payload = self._outgoing(held, payload)
        where = "neighbour exchange" + (f" at virtual time {now:.4g} s" if self.async_ else "")
        src, rows = self.part.route(sent, payload, where)
        dest = self.local_slot[self.slot_rev[src]]
        p = self.x.shape[1]
        msg = {key: rows[:, i * p:(i + 1) * p] for i, key in enumerate(self.message_keys)}
        if not self.async_:
            ok = self.faults.accept(msg)  # a non-finite model never reaches a copy
            self.receive(dest[ok].to(self.x.device),
                         {k: v[ok.to(v.device)] for k, v in msg.items()})
            self._rejected(dest[~ok])
            return
        self.transport.post(dest.tolist(), msg, self.transport.arrival(src, self.steps_done, now))
        self._deliver(now)


    def _deliver(self, now: float) -> None:
        """Hand the messages that have arrived by ``now`` to ``receive`` (live edges only)."""
        for slots, msg in self.transport.deliver(now):
            ok = self.faults.accept(msg)
            self._rejected(slots[~ok & self.live[self.held_edge[slots]]])
            alive = self.live[self.held_edge[slots]] & ok
            if bool(alive.any()):
                self.receive(slots[alive].to(self.x.device),
                             {k: v[alive.to(v.device)] for k, v in msg.items()})


    def _rejected(self, slots: torch.Tensor) -> None:
        """Held slots whose message was rejected: the receiver mixes its own model in place
        of that neighbour's (its weight moves to the self-loop for this exchange)."""
        if len(slots) and "x" in self.copies:
            dev = self.x.device
            self.copies["x"][slots.to(dev)] = self.x[self.own[slots.to(dev)]]


    def _outgoing(self, sent: torch.Tensor, payload: torch.Tensor) -> torch.Tensor:
        """Messages of the global slots ``sent`` (held here) as they arrive: attacked models,
        corrupted payloads (``fedweave.robust.peers``)."""
        senders, receivers = self.slot_own[sent], self.slot_nbr[sent]
        steps = self.steps_done[senders]
        if self.faults.model_attack:
            p, i = self.x.shape[1], self.message_keys.index("x")
            rows = self.own[self.local_slot[sent].to(self.x.device)]
            honest = None
            if self.ctx.config.attack.name == "alie":
                good = ~self.faults.bad[self.part.lo:self.part.hi].to(self.x.device)
                honest = (self.x - self.x_before)[good]
            payload = payload.clone()
            payload[:, i * p:(i + 1) * p] = self.faults.attack_models(
                senders, steps, payload[:, i * p:(i + 1) * p], self.x_before[rows], honest)
        return self.faults.corrupt(senders, receivers, steps, payload)


    def _swap_epoch(self, ended: torch.Tensor, now: float) -> None:
        """``epoch_swap``: the nodes of ``ended`` (bool [N]) swap messages with every live
        neighbour, both ways (reference system 001's ``diff()`` after each epoch)."""
        live = self.live[self.slot_edge]
        slots = torch.nonzero(live & (ended[self.slot_own] | ended[self.slot_nbr])).flatten()
        if len(slots) == 0:
            return
        self.bytes_up += len(slots) * self.msg_bytes
        self.bytes_down += len(slots) * self.msg_bytes
        self._send(slots, now)

    def _warn_alone(self, r: int) -> None:
        """One warning line per node whose every link has timed out (``clock.swap_timeout``):
        from this round on it trains alone. Said once per node, by the writing process."""
        degree = torch.zeros(self.n, dtype=torch.int64)
        degree.index_add_(0, self.slot_own, self.alive[self.slot_edge].to(torch.int64))
        had = torch.zeros(self.n, dtype=torch.int64)
        had.index_add_(0, self.slot_own, torch.ones_like(self.slot_own))
        alone = [i for i in torch.nonzero((degree == 0) & (had > 0)).flatten().tolist()
                 if i not in self.alone]
        if not alone:
            return
        self.alone.update(alone)
        if not is_writer():
            return
        labels = self.model_labels()
        timeout = self.ctx.config.clock.swap_timeout
        for i in alone:
            log.warning("node %s trains alone from round %d: every link timed out "
                        "(clock.swap_timeout=%g s is shorter than its exchanges take)",
                        labels[i], r + 1, timeout)
