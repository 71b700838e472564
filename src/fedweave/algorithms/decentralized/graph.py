"""The peer graph of a decentralized run as tensors over its 2E *directed slots*, and mixing.

Slot ``s`` belongs to node ``own[s]`` and faces neighbour ``nbr[s]``; slots ``s`` and ``rev[s]``
are the two ends of one undirected edge; ``sign[s] = A_{own|nbr}`` is +1 when own < nbr, else
−1. Everything that lives on an edge (duals ``z[2E, P]``, the last copy of a neighbour's message
``copies[name][2E, P]``: slot s holds what ``nbr[s]`` last sent to ``own[s]``) is a tensor over
the slots, and sums over neighbours are ``index_add`` over ``own``.

The *live* graph drops edges that timed out (``clock.swap_timeout``) and edges of crashed nodes
(``clock.node_crash``); W (``topology.mixing``) is recomputed on it, so a mixing
Σ_j W_ij m_j stays doubly stochastic whatever fails.

Processes (``fedweave.distributed.placement``): a process holds the nodes ``[lo, hi)`` of its
``NodePartition`` and the slots they own; node tensors have one row per held node, slot tensors
one row per held slot; ``own`` indexes the held rows, ``nbr`` is a global node id. The slot
bookkeeping (``slot_own``/``slot_nbr``/``slot_rev``/``slot_edge``, ``alive``) is replicated on
every process, so all of them take the same decisions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import networkx as nx
import torch

from fedweave.distributed.placement import node_partition
from fedweave.topology import build_graph, edge_list, mixing_matrix

if TYPE_CHECKING:
    from fedweave.context import RunContext
    from fedweave.distributed.placement import NodePartition
    from fedweave.robust.peers import NeighbourRule


class PeerGraph:
    """Slots, edges, the live graph, mixing and the halo of split processes (a part of
    ``DecentralizedAlgorithm``; ``_init_graph`` runs first in its constructor)."""

    ctx: RunContext
    n: int
    fast: bool
    # what it sets up (every directed slot, then the slots and nodes this process holds)
    edges: torch.Tensor
    slot_own: torch.Tensor
    slot_nbr: torch.Tensor
    slot_rev: torch.Tensor
    slot_edge: torch.Tensor
    alive: torch.Tensor
    up: torch.Tensor
    live: torch.Tensor
    part: NodePartition
    slots: torch.Tensor
    local_slot: torch.Tensor
    own: torch.Tensor
    held_edge: torch.Tensor
    message_keys: ClassVar[tuple[str, ...]]
    copies: dict[str, torch.Tensor]
    neighbour_rule: NeighbourRule | None

    def _init_graph(self, ctx: RunContext) -> None:
        cfg = ctx.config
        n = self.n
        self.graph = build_graph(cfg.topology, n, cfg.seed)
        self.edges = edge_list(self.graph)
        e = len(self.edges)
        # every directed slot, replicated on every process (CPU bookkeeping)
        ends, ar = self.edges, torch.arange(e)
        self.slot_own = torch.cat([ends[:, 0], ends[:, 1]])
        self.slot_nbr = torch.cat([ends[:, 1], ends[:, 0]])
        self.slot_rev = torch.cat([ar + e, ar])
        self.slot_edge = torch.cat([ar, ar])
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
        self.W_config = mixing_matrix(self.graph, cfg.topology.mixing)

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

