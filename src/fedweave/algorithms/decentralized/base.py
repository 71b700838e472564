"""Shared machinery of the decentralized (peer-to-peer) algorithms.

State is stacked: node models ``x[N, P]`` (+ stacked buffers), and everything that lives on an
edge is a tensor over the 2E *directed slots* of the edge list: slot ``s`` belongs to node
``own[s]`` and faces neighbour ``nbr[s]``; slots ``s`` and ``rev[s]`` are the two ends of one
undirected edge; ``sign[s] = A_{own|nbr}`` is +1 when own < nbr, else −1. Duals are ``z[2E, P]``
and the last copy of a neighbour's message is ``copies[name][2E, P]`` (slot s holds what
``nbr[s]`` last sent to ``own[s]``). Sums over neighbours are ``index_add`` over ``own``.

One round is one epoch: every node takes S = max_i ⌈n_i/b_i⌉ steps; node i's batches of its
epoch e come from ``batch_schedule(..., key=(e,))`` (stream (seed, "batches", e, i)), so one node
running D-SGD is exactly the centralized reference. A step of a set of nodes is

1. gradients of the local objective: ``g = engine.grads(x)`` of its data term, plus its
   parameter terms (``train.l2_lambda``: ½λ‖x‖², ∇ = λx);
2. ``local_update`` (the algorithm's primal/tracker update of those rows);
3. sends on every due slot (slot s is due at the owner's global step k when
   ``k mod K == offset[s]``; K = ``algorithm.exchange_period``; offsets per undirected edge from
   ``exchange_schedule`` or, with ``algorithm.offsets: file``, per directed slot from reference
   system 001's node list) and delivery to the other end (``receive``), after the transfer time;
4. ``combine`` (mixing with the copies received so far).

Two-way exchanges (``algorithm.exchange: two_way``, reference system 001): every node keeps an
*outbox* per slot, the message it published at the end of its last step (initially the initial
model for ``x`` and zeros for other keys, what receivers hold before any exchange). A step is
then local update → combine (with the copies received so far) → publish → exchange: on a due
slot i→j, i's outbox goes to j and j's outbox comes back to i (j answers whatever it is doing,
e.g. with its frozen model while idle). The received values are used from the next step on.
``epoch_swap`` (D-SGD; the reference's ``diff()``): at the end of each node epoch the node
swaps outboxes with every live neighbour, both ways (no fault draws).

Synchronous (default): all nodes step together, messages arrive at once. Asynchronous
(``clock.asynchronous``): node i's k-th step finishes at virtual time (k+1)·τ_i,
τ_i = seconds_per_sample_i · b; nodes finishing at the same time step together; a message
sent at T arrives at T + latency + bytes / min(up_i, down_j) and is used by the receiver from
its next combine on (stale copies). A round ends at virtual time (r+1)·S·max_i τ_i. With equal
speeds and zero transfer time this is the synchronous run. Train/idle periods
(``clock.train_fraction`` f, ``clock.phase``): node i's epoch period is T_i = S·τ_i/f, its
first starts at φ_i (0, or ~ U(0, T_i) from ``numpy_rng(seed, "clock-phase")``), it trains in
the first S·τ_i of each period and is idle for the rest, so its k-th step finishes at
φ_i + ⌊k/S⌋·T_i + (k mod S + 1)·τ_i, its epoch e ends at φ_i + e·T_i + T_i, and a round ends at
(r+1)·max_i T_i.

Time runs on the shared virtual-time scheduler (``fedweave.sim.scheduler``: asynchronous
peers keep one "step" event each, and one "epoch_end" event with ``epoch_swap``) and messages
travel through ``fedweave.sim.transport`` (transfer times, faults, the in-flight queue). Faults
(``fedweave.sim.clock``): an exchange lost with probability ``clock.link_drop`` is not
delivered (the receiver keeps its stale copy); an edge whose exchange misses
``clock.swap_timeout`` is dropped for the rest of the run, W is recomputed on the live graph
and the edge's duals leave the sums (reference system 001 stops the node instead; we keep training).

Processes (``fedweave.distributed.placement``): a process holds the nodes ``[lo, hi)`` of its
``NodePartition`` — all of them under the local engine — and the slots they own. Node tensors
have one row per held node, slot tensors one row per held slot; ``own`` indexes the held rows,
``nbr`` is a global node id. The bookkeeping that decides who steps and which slots send
(``steps_done``, ``alive``, ``slot_own``/``slot_nbr``/``slot_rev``/``slot_edge`` over all 2E
slots) is replicated on every process, so all of them take the same decisions; ``models`` and
``state`` gather the full ``[N, ...]``/``[2E, ...]`` tensors, so checkpoints do not depend on
the number of processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import networkx as nx
import torch
from pydantic import Field

from fedweave.aggregators import build_aggregator
from fedweave.algorithms.base import Algorithm, RoundResult
from fedweave.config import AlgorithmConfig
from fedweave.context import RunContext
from fedweave.core.population import Buffers, stack_buffers
from fedweave.core.state import State, section
from fedweave.distributed.placement import node_partition
from fedweave.errors import UserError
from fedweave.robust.attacks import attack_record
from fedweave.robust.peers import NeighbourRule, PeerFaults, down_nodes
from fedweave.sim.clock import epoch_phases, node_profiles
from fedweave.sim.scheduler import EPS, Scheduler
from fedweave.sim.transport import Transport
from fedweave.topology import (
    build_graph,
    directed_offsets,
    edge_list,
    exchange_schedule,
    mixing_matrix,
    plot_graph,
    spectral_gap,
)
from fedweave.training.batches import batch_schedule, batch_width, local_steps
from fedweave.training.objectives import L2, Objective
from fedweave.training.optim import FunctionalOptimizer
from fedweave.training.protocol import Batches


class DecentralizedConfig(AlgorithmConfig):
    """Keys shared by every decentralized algorithm."""

    kind: ClassVar[Literal["federated", "decentralized", "async", "centralized"]] = (
        "decentralized"
    )
    supports_async: ClassVar[bool] = True


class PeriodicConfig(DecentralizedConfig):
    """Algorithms whose edges exchange on a period (not gossip's matchings or CADMM's rounds)."""

    exchange_period: int = Field(
        1, ge=1, description="K: each edge exchanges once every K steps, at its offset"
    )
    offsets: Literal["auto", "file"] = Field(
        "auto", description="offsets of the exchanges within the period K: auto = one per edge, "
        "a proper edge colouring (exchange_schedule); file = one per directed edge i→j from "
        "topology.file (reference system 001's node_list.json: node i starts the exchange "
        "with j after its step t when t mod K = offset)")


class SwapConfig(PeriodicConfig):
    """Algorithms whose exchanges may be reference system 001's two-way swaps."""

    exchange: Literal["one_way", "two_way"] = Field(
        "one_way", description="one_way: a due slot i→j sends i's message to j; two_way "
        "(reference system 001): node i's due slot i→j swaps i's and j's published messages "
        "(what each published after its own last step, e.g. an idle node's frozen model); "
        "received values are used from the next step on")


@dataclass
class StepInfo:
    """What a step did, for observers (e.g. influence scoring): the held nodes that stepped,
    their models before the step, the gradients, the models after the local update (before
    combining with neighbours) and after the step, the step sizes and the (epoch, step)
    batch keys of each group of stepping nodes."""

    active: torch.Tensor
    x_before: torch.Tensor
    grads: torch.Tensor
    x_local: torch.Tensor
    x_after: torch.Tensor
    lr: torch.Tensor
    groups: list[tuple[torch.Tensor, int, int]]


StepObserver = Callable[["DecentralizedAlgorithm", StepInfo], None]


class DecentralizedAlgorithm(Algorithm):
    """Base class: subclasses define the per-step update rule (see the module docstring)."""

    config: DecentralizedConfig
    per_node_models: ClassVar[bool] = True
    #: names of the [P] tensors a node sends on a slot (bytes = len · P · element size)
    message_keys: ClassVar[tuple[str, ...]] = ("x",)
    #: True: combine is a mixing ``Σ_j W_ij m_j`` that may use W @ m when every edge is fresh
    mixes: ClassVar[bool] = False

    #: names of ``algorithm_state`` entries with one row per directed slot (else: per node)
    slot_state: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        cfg = ctx.config
        self.n = n = ctx.data.nodes
        self.graph = build_graph(cfg.topology, n, cfg.seed)
        self.edges = edge_list(self.graph)
        e = len(self.edges)
        # every directed slot, replicated on every process (CPU bookkeeping)
        ends, ar = self.edges, torch.arange(e)
        self.slot_own = torch.cat([ends[:, 0], ends[:, 1]])
        self.slot_nbr = torch.cat([ends[:, 1], ends[:, 0]])
        self.slot_rev = torch.cat([ar + e, ar])
        self.slot_edge = torch.cat([ar, ar])
        #: K of ``exchange_period`` (1 for algorithms that schedule exchanges their own way)
        self.period = int(getattr(self.config, "exchange_period", 1))
        if getattr(self.config, "offsets", "auto") == "file":
            self.offset = directed_offsets(cfg.topology, self.edges, self.period)
        else:
            self.offset = self.schedule_offsets().repeat(2)
        self.two_way = getattr(self.config, "exchange", "one_way") == "two_way"
        self.epoch_swap = bool(getattr(self.config, "epoch_swap", False))
        self.alive = torch.ones(e, dtype=torch.bool)
        self.up = torch.ones(n, dtype=torch.bool)  # nodes not crashed (clock.node_crash)
        self.part, self.engine, self.exchange_mode = node_partition(
            ctx, self.slot_own, self.slot_nbr, len(self.message_keys))
        # what this process holds
        dev, lo = ctx.device, self.part.lo
        self.rows = self.part.hi - lo
        self.nodes = torch.arange(lo, self.part.hi, device=dev)
        self.slots = self.part.slots
        self.local_slot = torch.full((2 * e,), -1, dtype=torch.int64)
        self.local_slot[self.slots] = torch.arange(len(self.slots))
        self.own = (self.slot_own[self.slots] - lo).to(dev)
        self.nbr = self.slot_nbr[self.slots].to(dev)
        self.held_edge = self.slot_edge[self.slots]
        dtype = ctx.init_params.dtype
        self.sign = torch.where(self.slots < e, 1.0, -1.0).to(dev, dtype).view(-1, 1)
        self.x = ctx.init_params.unsqueeze(0).repeat(self.rows, 1)
        self.buffers: Buffers = stack_buffers(ctx.init_buffers, self.rows)
        self.steps_done = torch.zeros(n, dtype=torch.int64)
        self.clock = Scheduler(("step", "epoch_end"))
        self.everyone = False
        self.optimizer = FunctionalOptimizer(cfg.train)  # local optimizer (dsgd, gossip, cadmm)
        self.opt_state: dict[str, torch.Tensor] = {}
        self.edges_dropped = 0
        self.profile = node_profiles(cfg.clock, n, cfg.seed)
        self.S = int(local_steps(cfg.train, ctx.data.sizes).max())
        self.b = torch.minimum(ctx.data.sizes, torch.tensor(cfg.train.batch_size))
        self.tau = self.profile.seconds_per_sample * self.b.to(torch.float64)
        self.async_ = cfg.clock.asynchronous
        #: train/idle periods: T_i = S·τ_i / train_fraction, first period starting at φ_i
        self.idle = cfg.clock.train_fraction < 1 or cfg.clock.phase != "zero"
        self.epoch_period = self.S * self.tau / cfg.clock.train_fraction
        self.phase = epoch_phases(cfg.clock, cfg.seed, self.epoch_period)
        self.msg_bytes = len(self.message_keys) * ctx.layout.total * ctx.init_params.element_size()
        clock = cfg.clock
        self.transport = Transport(clock, self.profile, cfg.seed, self.slot_own, self.slot_nbr,
                                   self.edges, self.msg_bytes)
        self.late = self.transport.late
        self.faults = PeerFaults(cfg.attack, clock, n, cfg.seed)  # attacks, corruption, crashes
        self._check_faults()
        #: sync, every edge every step, no faults: mixing sees current rows (W @ x when one
        #: process holds every node; split processes still route the rows as messages)
        self.fast = (self.mixes and not self.async_ and self.period == 1 and not self.two_way
                     and clock.link_drop == 0 and not bool(self.late.any())
                     and not self.faults.active and not clock.node_crash
                     and cfg.aggregator.name is None)
        self.W_config = mixing_matrix(self.graph, cfg.topology.mixing)
        self._set_mixing()
        #: ``aggregator.name``: a robust rule replaces the neighbour average of the models
        self.neighbour_rule = NeighbourRule(build_aggregator(cfg.aggregator, "weighted_mean"),
                                            self.own, self.rows) if cfg.aggregator.name else None
        self.x_before = self.x
        self.copies: dict[str, torch.Tensor] = {}
        self.observers: list[StepObserver] = []
        #: the local loss: the engine's data term, then the parameter terms (½λ‖x‖²)
        l2 = cfg.train.l2_lambda
        self.objective = Objective(terms=(L2(l2),) if l2 else ())
        self._batches: dict[int, Batches] = {}
        self._gathered: tuple[torch.Tensor, Buffers] | None = None
        self.init_state()
        #: two-way exchanges: what each held slot's owner published after its last step
        self.outbox: dict[str, torch.Tensor] = {}
        if self.two_way:
            for key in self.message_keys:
                init = ctx.init_params if key == "x" else torch.zeros_like(ctx.init_params)
                self.outbox[key] = init.to(self.x.device).expand(len(self.slots), -1).clone()

    # ------------------------------------------------------------------ hooks

    def schedule_offsets(self) -> torch.Tensor:
        """Per undirected edge offset of its exchanges (``exchange_schedule``)."""
        return exchange_schedule(self.edges, self.n, self.period)

    def init_state(self) -> None:
        """Allocate algorithm state (duals, trackers, copies)."""

    def due(self, k: torch.Tensor) -> torch.Tensor:
        """bool [2E], every slot (replicated): slots whose owner, at its global step
        ``k[slot_own]`` (``k``: [N], CPU), exchanges now (an offset of −1: never)."""
        return (k[self.slot_own] % self.period) == self.offset

    def local_update(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        """Update the ``active`` held rows from gradients ``g`` (zero elsewhere) and ``lr``
        (one row per held node)."""
        raise NotImplementedError

    def message(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        """What ``own[slots]`` send on ``slots``: {key: [len(slots), P]}. Default: the model."""
        return {"x": self.x[self.own[slots]]}

    def receive(self, slots: torch.Tensor, msg: dict[str, torch.Tensor]) -> None:
        """Slots (receiver side) get the messages. Default: keep copies."""
        for key, value in msg.items():
            self.copies[key][slots] = value

    def combine(self, active: torch.Tensor, due: torch.Tensor, lr: torch.Tensor,
                fresh: bool) -> None:
        """After the exchange: ``due`` held slots of the active nodes; ``fresh`` when every
        live slot was just refreshed synchronously (so W @ m may replace the copies)."""

    def algorithm_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_algorithm_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``algorithm_state``."""

    # ------------------------------------------------------------------ helpers

    def _check_faults(self) -> None:
        attack = self.ctx.config.attack
        if self.faults.model_attack and "x" not in self.message_keys:
            raise UserError(f"attack.name={attack.name} corrupts the model a peer sends; "
                            f"algorithm.name={self.config.name} sends no model")
        if attack.name == "alie" and self.part.split:
            raise UserError("attack.name=alie needs every node's update on every process: use "
                            "engine.exchange=all_gather")
        if self.ctx.config.clock.node_crash and self.async_:
            raise UserError("clock.node_crash is simulated for synchronous rounds: set "
                            "clock.asynchronous=false")

    def _set_mixing(self) -> None:
        #: edges in use: not timed out, both ends up
        self.live = self.alive & self.up[self.edges[:, 0]] & self.up[self.edges[:, 1]] \
            if len(self.edges) else self.alive
        live = nx.empty_graph(self.n)
        live.add_edges_from(self.edges[self.live].tolist())
        w = mixing_matrix(live, self.ctx.config.topology.mixing)
        dev, dtype = self.ctx.device, self.ctx.init_params.dtype
        alive = self.live[self.slot_edge]
        self.W = w.to(dev, dtype)
        lo, hi = self.part.lo, self.part.hi
        if not self.part.split:
            self.W_sparse = self.W.to_sparse() if self.n > 1 else self.W
        elif self.fast:
            self._set_halo(lo, hi)
        self.w_diag = torch.diagonal(w)[lo:hi].reshape(-1, 1).to(dev, dtype)
        self.w_slot = (w[self.slot_own, self.slot_nbr] * alive)[self.slots].view(-1, 1) \
            .to(dev, dtype)
        self.slot_alive = alive[self.slots].to(dev, dtype).view(-1, 1)
        self.degree = torch.zeros(self.rows, dtype=dtype, device=dev).index_add_(
            0, self.own, self.slot_alive.view(-1)).view(-1, 1)

    def _set_halo(self, lo: int, hi: int) -> None:
        """For ``fast`` mixing on split processes: the rows of W held here restricted to the
        held nodes and their outside neighbours (the halo), columns in global node order, so
        ``W_local @ [held rows; halo rows]`` sums exactly like the single process's ``W @ X``
        (bit-identical results). A halo row is read from one slot facing that neighbour."""
        outside = (self.nbr.cpu() < lo) | (self.nbr.cpu() >= hi)
        halo: dict[int, int] = {}
        for slot in torch.nonzero(outside).flatten().tolist():
            halo.setdefault(int(self.nbr[slot]), slot)
        cols = sorted([*range(lo, hi), *halo])
        position = {c: c - lo for c in range(lo, hi)}
        position.update({c: self.rows + i for i, c in enumerate(halo)})
        dev = self.W.device
        self.halo_slot = torch.tensor(list(halo.values()), dtype=torch.int64, device=dev)
        self.halo_order = torch.tensor([position[c] for c in cols], device=dev)
        self.W_local = self.W[lo:hi][:, torch.tensor(cols, device=dev)].to_sparse()

    def select(self, active: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """Rows of ``new`` for active nodes, of ``old`` elsewhere."""
        return new if self.everyone else torch.where(active.view(-1, 1), new, old)

    def sgd_step(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        """x ← local optimizer step (``train.optimizer``; per-node ``lr[N, 1]``); in place
        when every node steps (``g`` is consumed), else on a copy."""
        inplace = self.everyone and not self.observers
        self.x = self.optimizer.step(self.x, g, self.opt_state, lr, active, inplace=inplace)

    def neighbour_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Per held node: Σ over its live slots of ``values`` (one row per held slot)."""
        out = torch.zeros(self.rows, values.shape[1], dtype=values.dtype, device=values.device)
        return out.index_add_(0, self.own, values * self.slot_alive)

    def mix(self, own_value: torch.Tensor, key: str, fresh: bool) -> torch.Tensor:
        """Σ_j W_ij m_j: ``W @ m`` when fresh (on split processes: the held rows of W times the
        held rows and the copies just received), else W_ii m_i + Σ_j W_ij (copy of m_j)."""
        if key == "x" and self.neighbour_rule is not None:
            return self.neighbour_rule(own_value, self.copies[key], self.w_diag, self.w_slot,
                                       self.slot_alive.view(-1) > 0)
        if fresh and not self.part.split:
            return self.W_sparse @ own_value if self.n > 1 else own_value
        if fresh:
            ext = torch.cat([own_value, self.copies[key][self.halo_slot]])[self.halo_order]
            return self.W_local @ ext
        out = self.w_diag * own_value
        return out.index_add_(0, self.own, self.w_slot * self.copies[key])

    def new_copies(self, key: str, init: torch.Tensor) -> None:
        """Slot copies of ``key``, starting at the neighbours' initial value ``init[P]`` (every
        node starts from the same seeded model, and trackers from zero). Not needed when W @ m
        mixes current rows; split processes keep them as the inbox of ``fast`` exchanges."""
        if not self.fast or self.part.split:
            self.copies[key] = init.expand(len(self.slots), -1).clone()

    def batches(self, epoch: int) -> Batches:
        if epoch not in self._batches:
            data = self.ctx.data
            self._batches = {k: v for k, v in self._batches.items() if k >= epoch - 1}
            batch = self.ctx.config.train.batch_size
            self._batches[epoch] = batch_schedule(
                data, self.nodes.cpu(), torch.full((self.rows,), self.S), batch, (epoch,),
                width=batch_width(data, torch.arange(self.n), batch))  # all N, held or not
        return self._batches[epoch]

    # ------------------------------------------------------------------ one step

    def _step(self, groups: list[tuple[torch.Tensor, int, int]], now: float,
              stats: dict[str, torch.Tensor]) -> float:
        """Step the nodes of ``groups`` [(stepping mask [N], epoch, step in epoch)] at time
        ``now``; returns the longest transfer time of the sends (for the synchronous clock)."""
        dtype, dev = self.x.dtype, self.x.device
        lo, hi = self.part.lo, self.part.hi
        g: torch.Tensor | None = None  # allocated only when several groups step
        lr = torch.zeros(self.rows, 1, dtype=dtype, device=dev)
        active = torch.zeros(self.rows, dtype=torch.bool, device=dev)
        stepping = torch.zeros(self.n, dtype=torch.bool)
        for mask, epoch, t in groups:
            stepping |= mask
            held = mask[lo:hi].to(dev)
            if not bool(held.any()):
                continue
            bt = self.batches(epoch)
            out = self.engine.grads(self.x, self.buffers, bt.idx[:, t], bt.weight[:, t],
                                    held, (epoch, t), self.nodes, self.objective.data)
            everyone = len(groups) == 1 and bool(held.all())
            if everyone:
                g = out.grads
            else:
                g = torch.where(held.view(-1, 1), out.grads, 0.0 if g is None else g)
            self.buffers = out.buffers
            lr[held] = self.ctx.lr(epoch)
            act = held.to(dtype)
            stats["loss"] += out.loss.to(dtype) * out.count * act
            stats["correct"] += out.correct.to(dtype) * act
            stats["seen"] += out.count.to(dtype) * act
            active |= held
        self.everyone = bool(active.all())
        stepped = bool(active.any())
        watch = bool(self.observers) and stepped
        x_before = self.x.clone() if watch else self.x
        if g is None:
            g = torch.zeros_like(self.x)
        if stepped:
            self.objective.add_param_grads(g, self.x)  # in place (g is fresh): ½λ‖x‖², ...
            if self.faults.model_attack:  # attacks replace the update of this local step
                self.x_before = self.x.clone()
            self.local_update(active, g, lr)
        x_local = self.x.clone() if watch else self.x
        k = self.steps_done
        due = self.due(k) & stepping[self.slot_own] & self.live[self.slot_edge]
        self.steps_done = k + stepping.to(torch.int64)
        if self.two_way:  # combine with what arrived before, publish, then swap
            if stepped:
                self.combine(active, due[self.slots].to(dev), lr, False)
                self._publish(active)
            longest, _ = self._exchange(due, k, now)
        else:
            longest, fresh = self._exchange(due, k, now)
            if stepped:
                held_due = (due & self.live[self.slot_edge])[self.slots].to(dev)
                self.combine(active, held_due, lr, fresh)
        if watch:
            info = StepInfo(active, x_before, g, x_local, self.x, lr, groups)
            for observer in self.observers:
                observer(self, info)
        return longest

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
        self.transport.post(dest.tolist(), msg, now + self.transport.transfer(src))
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

    # ------------------------------------------------------------------ rounds

    def round(self, r: int) -> RoundResult:
        self.part.start_round(r)
        self._gathered = None
        up = ~down_nodes(self.ctx.config.clock, self.ctx.seed, r, self.n)
        if not torch.equal(up, self.up):  # crashes and rejoins: the live graph changes
            self.up = up
            self._set_mixing()
        self.faults.rejected = 0
        dtype = self.x.dtype
        stats = {k: torch.zeros(self.rows, dtype=dtype, device=self.x.device)
                 for k in ("loss", "correct", "seen")}
        self.bytes_up = self.bytes_down = 0
        self.exchanges_lost = 0
        dropped_before = self.edges_dropped
        sim = self._round_async(r, stats) if self.async_ else self._round_sync(r, stats)
        stats = self.part.gather_nodes(stats)
        seen = stats["seen"].clamp(min=1)
        loss, acc = stats["loss"] / seen, stats["correct"] / seen
        weights = stats["seen"] / stats["seen"].sum().clamp(min=1)
        x, _ = self._all_models()
        xbar = x.mean(0, keepdim=True)
        extras = {
            "consensus_distance": float(((x - xbar) ** 2).sum(1).mean()),
            "edges_dropped": float(self.edges_dropped),
            "edges_dropped_round": float(self.edges_dropped - dropped_before),
            "exchanges_lost": float(self.exchanges_lost),
            "live_edges": float(self.live.sum()),
        }
        if self.faults.active:  # every process counts what it received
            count = torch.tensor([self.faults.rejected], dtype=torch.int64)
            extras["messages_rejected"] = float(self.part.gather_lists({"n": count})["n"].sum())
        if self.ctx.config.clock.node_crash:
            extras["nodes_down"] = float((~self.up).sum())
        return RoundResult(
            train_loss=float((loss * weights).sum()), train_acc=float((acc * weights).sum()),
            bytes_up=self.bytes_up, bytes_down=self.bytes_down, sim_time=sim,
            node_train={"loss": loss.cpu(), "acc": acc.cpu()}, extras=extras)

    def _swap_epoch(self, ended: torch.Tensor, now: float) -> None:
        """``epoch_swap``: the nodes of ``ended`` (bool [N]) swap messages with every live
        neighbour, both ways (reference system 001's ``diff()`` after each epoch)."""
        live = self.alive[self.slot_edge]
        slots = torch.nonzero(live & (ended[self.slot_own] | ended[self.slot_nbr])).flatten()
        if len(slots) == 0:
            return
        self.bytes_up += len(slots) * self.msg_bytes
        self.bytes_down += len(slots) * self.msg_bytes
        self._send(slots, now)

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
        periods φ_i + ⌊k/S⌋·T_i + (k mod S + 1)·τ_i."""
        if not self.idle:
            return float((k + 1) * self.tau[node])
        e, t = divmod(k, self.S)
        start = self.phase[node] + e * self.epoch_period[node]
        return float(start + (t + 1) * self.tau[node])

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
        self.clock.now = end
        return end - start

    # ------------------------------------------------------------------ API

    def _all_models(self) -> tuple[torch.Tensor, Buffers]:
        """All N node models and buffers (gathered once per round when processes are split:
        the round's metrics, evaluation and checkpoint share it)."""
        if not self.part.split:
            return self.x, self.buffers
        if self._gathered is None:
            full = self.part.gather_nodes({"x": self.x, **{f"buffers.{k}": v
                                                            for k, v in self.buffers.items()}})
            self._gathered = (full["x"], {k[8:]: v for k, v in full.items()
                                          if k.startswith("buffers.")})
        return self._gathered

    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        x, buffers = self._all_models()
        return x, buffers, self.model_labels()

    def model_labels(self) -> list[str]:
        return [str(i) for i in range(self.n)]

    def finite(self) -> bool:
        """Every held row finite, on every process (a collective when they are split)."""
        ok = torch.tensor([bool(torch.isfinite(self.x).all())], dtype=torch.uint8)
        if self.part.split:
            ok = self.part.gather_lists({"ok": ok})["ok"]
        return bool(ok.all())

    def info(self) -> dict[str, Any]:
        cfg = self.ctx.config
        return {"neighbour_exchange": self.exchange_mode,
                **attack_record(cfg.attack, self.n, cfg.seed)}

    def model_weights(self) -> torch.Tensor | None:
        """With attackers, the means over nodes are over the honest nodes only."""
        bad = self.faults.bad
        return (~bad).to(torch.float64) if bool(bad.any()) else None

    def write_artifacts(self, plots_dir: Path) -> None:
        """plots/topology.png and topology.json (edges, degrees, mixing, spectral gap)."""
        plot_graph(self.graph, self.W_config, plots_dir / "topology.png")
        topo = self.ctx.config.topology
        info = {"topology": topo.name, "mixing": topo.mixing, "nodes": self.n,
                "edges": [list(map(int, e)) for e in self.graph.edges],
                "degrees": [int(d) for _, d in sorted(self.graph.degree)],
                "spectral_gap": spectral_gap(self.W_config)}
        (plots_dir.parent / "topology.json").write_text(json.dumps(info, indent=2))

    def state(self) -> State:
        """The full state (every node and slot; a collective when processes are split)."""
        x, buffers = self._all_models()
        node: dict[str, torch.Tensor] = {}
        slot: dict[str, torch.Tensor] = {}
        if not self.fast:  # fast exchanges refresh every copy before it is read
            slot.update({f"copies/{k}": v for k, v in self.copies.items()})
        slot.update({f"outbox/{k}": v for k, v in self.outbox.items()})
        out: State = {"x": x, "buffers": buffers, "steps_done": self.steps_done,
                      "clock": self.clock.state(), "alive": self.alive,
                      "edges_dropped": torch.tensor(self.edges_dropped)}
        algo: State = {}
        for k, v in self.algorithm_state().items():
            if k in self.slot_state:
                slot[f"algo/{k}"] = v
            elif v.dim():
                node[k] = v
            else:
                algo[k] = v
        algo.update(self.part.gather_nodes(node))
        gathered = self.part.gather_slots(slot)
        algo.update({k[5:]: v for k, v in gathered.items() if k.startswith("algo/")})
        out["copies"] = {k[7:]: v for k, v in gathered.items() if k.startswith("copies/")}
        if self.outbox:
            out["outbox"] = {k[7:]: v for k, v in gathered.items() if k.startswith("outbox/")}
        out["algo"] = algo
        if self.async_:
            out["in_flight"] = self.transport.state(
                self.slots, self.message_keys, self.x.shape[1], self.x, self.part.gather_lists)
        return out

    def load_state(self, state: State) -> None:
        """Inverse of ``state``: this process takes its nodes' and slots' rows."""
        dev = self.x.device
        lo, hi = self.part.lo, self.part.hi
        held = self.slots.to(dev)
        self._gathered = None
        self.x = state["x"][lo:hi].to(dev)
        self.steps_done = state["steps_done"].cpu()
        self.clock.load_state(state["clock"])
        self.alive = state["alive"].cpu()
        self.edges_dropped = int(state["edges_dropped"])
        self._set_mixing()
        self.buffers = {k: v[lo:hi].to(dev) for k, v in section(state, "buffers").items()}
        self.copies.update({k: v.to(dev)[held] for k, v in section(state, "copies").items()})
        self.outbox.update({k: v.to(dev)[held] for k, v in section(state, "outbox").items()})
        self.load_algorithm_state({
            k: v.to(dev)[held] if k in self.slot_state else v.to(dev)[lo:hi] if v.dim()
            else v for k, v in section(state, "algo").items()})
        self.transport.load_state(section(state, "in_flight"), self.local_slot, dev)


class LocalOptimizerAlgorithm(DecentralizedAlgorithm):
    """Algorithms whose local step is the optimizer ``train.optimizer`` (state kept across
    epochs) and whose messages are the models: D-SGD, gossip, CADMM."""

    def init_state(self) -> None:
        self.opt_state = self.optimizer.init(self.x)
        self.new_copies("x", self.ctx.init_params)

    def local_update(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        self.sgd_step(active, g, lr)

    def algorithm_state(self) -> dict[str, torch.Tensor]:
        return {f"opt.{k}": v for k, v in self.opt_state.items()}

    def load_algorithm_state(self, state: dict[str, torch.Tensor]) -> None:
        self.opt_state = {k[4:]: v for k, v in state.items() if k.startswith("opt.")}


__all__ = ["DecentralizedAlgorithm", "DecentralizedConfig", "FunctionalOptimizer",
           "LocalOptimizerAlgorithm", "PeriodicConfig", "SwapConfig"]
