"""The template of the decentralized (peer-to-peer) algorithms, and their checkpoints.

State is stacked: node models ``x[N, P]`` (+ stacked buffers) and, per directed slot of the
graph, duals and the last copies of the neighbours' messages (``graph.py``). One round is one
epoch of S = max_i ⌈n_i/b_i⌉ local steps (``timing.py``: lock step or event-driven); node i's
batches of its epoch e come from ``batch_schedule(..., key=(e,))`` (stream (seed, "batches", e,
i)), so one node running D-SGD is exactly the centralized reference. A step of a set of nodes is

1. gradients of the local objective: ``g = engine.grads(x)`` of its data term, plus its
   parameter terms (``train.l2_lambda``: ½λ‖x‖², ∇ = λx);
2. ``local_update`` (the algorithm's primal/tracker update of those rows);
3. sends on every due slot and delivery to the other end (``receive``), after the transfer time
   (``exchange.py``: schedules, two-way swaps, faults, byte counts);
4. ``combine`` (mixing with the copies received so far).

An algorithm is a subclass that fills in the hooks: ``local_update``, ``combine``, and where it
sends more than its model ``message_keys``/``message``/``receive`` (and ``message_bytes`` when
its messages are compressed), its state in ``init_state``/``algorithm_state``/
``load_algorithm_state`` (``slot_state`` names the per-slot entries).

``models`` and ``state`` gather the full ``[N, ...]``/``[2E, ...]`` tensors from split
processes, so checkpoints do not depend on the number of processes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from fedweave.aggregators import build_aggregator
from fedweave.algorithms.base import Algorithm, RoundResult
from fedweave.algorithms.decentralized.availability import PeerAvailability
from fedweave.algorithms.decentralized.lookahead import GradientCache
from fedweave.config import AlgorithmConfig
from fedweave.context import RunContext
from fedweave.core.population import Buffers, stack_buffers
from fedweave.core.state import State, section
from fedweave.robust.attacks import attack_record
from fedweave.robust.peers import NeighbourRule, down_nodes
from fedweave.topology import node_names, plot_graph, spectral_gap
from fedweave.training.batches import batch_schedule, batch_width
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
    offsets: Literal["auto", "file", "colouring"] = Field(
        "auto", description="offsets of the exchanges within the period K: file = one per "
        "directed edge i→j from topology.file (reference system 001's node_list.json: node i "
        "starts the exchange with j after its step t when t mod K = offset; its round must be "
        "K); colouring = one per edge, a proper edge colouring (exchange_schedule), ignoring "
        "the file's; auto = file when topology.file gives offsets, else colouring")


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


class DecentralizedAlgorithm(PeerAvailability, Algorithm):
    """Base class: subclasses define the per-step update rule (see the module docstring)."""

    config: DecentralizedConfig
    per_node_models: ClassVar[bool] = True
    #: names of the [P] tensors a node sends on a slot (bytes: ``message_bytes``)
    message_keys: ClassVar[tuple[str, ...]] = ("x",)
    #: True: ``combine`` is a mixing Σ_j W_ij m_j of the models, which may use W @ x on the
    #: current rows when every edge is fresh. That fast path builds and sends no message, so
    #: ``message``/``receive`` are not called; it is off for algorithms that override
    #: ``receive`` (see ``exchange.py`` for every condition).
    mixes: ClassVar[bool] = False

    #: names of ``algorithm_state`` entries with one row per directed slot (else: per node)
    slot_state: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        cfg = ctx.config
        self.n = ctx.data.nodes
        self._init_graph(ctx)
        names = node_names(cfg.topology)
        self.labels = names if names is not None and len(names) == self.n else \
            [str(i) for i in range(self.n)]
        self.x = ctx.init_params.unsqueeze(0).repeat(self.rows, 1)
        self.buffers: Buffers = stack_buffers(ctx.init_buffers, self.rows)
        self.steps_done = torch.zeros(self.n, dtype=torch.int64)
        self.everyone = False
        self.optimizer = FunctionalOptimizer(cfg.train)  # local optimizer (dsgd, gossip, cadmm)
        self.opt_state: dict[str, torch.Tensor] = {}
        self._init_timing(ctx)
        self._init_exchange(ctx)
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
        #: asynchronous clock: gradients of later steps with the same key (``lookahead.py``)
        self.ahead = GradientCache()
        #: nodes whose every link has timed out (warned about once, ``_warn_alone``)
        self.alone: set[int] = set()
        self.init_state()
        self._init_outbox()

    # ------------------------------------------------------------------ hooks

    def init_state(self) -> None:
        """Allocate algorithm state (duals, trackers, copies)."""

    def local_update(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        """Update the ``active`` held rows from gradients ``g`` (zero elsewhere) and ``lr``
        (one row per held node)."""
        raise NotImplementedError

    def combine(self, active: torch.Tensor, due: torch.Tensor, lr: torch.Tensor,
                fresh: bool) -> None:
        """After the exchange: ``due`` held slots of the active nodes; ``fresh`` when every
        live slot was just refreshed synchronously (so W @ m may replace the copies)."""

    def algorithm_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_algorithm_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of ``algorithm_state``."""

    # ------------------------------------------------------------------ helpers

    def select(self, active: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """Rows of ``new`` for active nodes, of ``old`` elsewhere."""
        return new if self.everyone else torch.where(active.view(-1, 1), new, old)

    def sgd_step(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        """x ← local optimizer step (``train.optimizer``; per-node ``lr[N, 1]``); in place
        when every node steps (``g`` is consumed), else on a copy."""
        inplace = self.everyone and not self.observers
        self.x = self.optimizer.step(self.x, g, self.opt_state, lr, active, inplace=inplace)

    def batches(self, epoch: int) -> Batches:
        if epoch not in self._batches:
            data = self.ctx.data
            self._batches = {k: v for k, v in self._batches.items() if k >= epoch - 1}
            batch = self.ctx.config.train.batch_size
            self._batches[epoch] = batch_schedule(
                data, self.nodes.cpu(), torch.full((self.rows,), self.S), batch, (epoch,),
                width=batch_width(data, torch.arange(self.n), batch))  # all N, held or not
        return self._batches[epoch]

    # ------------------------------------------------------------------ one step and a round

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
        stepping_all = torch.stack([m for m, _, _ in groups]).any(0) if self.async_ else None
        for mask, epoch, t in groups:
            stepping |= mask
            held = mask[lo:hi].to(dev)
            if not bool(held.any()):
                continue
            out = self._group_grads(held, epoch, t, stepping_all)
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

    def round(self, r: int) -> RoundResult:
        self.part.start_round(r)
        self._gathered = None
        up = ~down_nodes(self.ctx.config.clock, self.ctx.seed, r, self.n)
        up, wait = self._await_online(up)  # a device trace's offline nodes (availability.py)
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
        sim = wait + (self._round_async(r, stats) if self.async_ else self._round_sync(r, stats))
        if self.edges_dropped > dropped_before:
            self._warn_alone(r)
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
        if self.profile.availability is not None:
            extras["nodes_offline"] = float(self.offline)
        return RoundResult(
            train_loss=float((loss * weights).sum()), train_acc=float((acc * weights).sum()),
            bytes_up=self.bytes_up, bytes_down=self.bytes_down, sim_time=sim,
            node_train={"loss": loss.cpu(), "acc": acc.cpu()}, extras=extras)

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
        """The nodes' names in reference system 001's node list (``topology.file``), else
        their indices."""
        return list(self.labels)

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
