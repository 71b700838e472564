"""Which decentralized nodes a process holds, and how messages reach the other processes.

One process (the local engine, and the distributed engine's ``all_gather`` exchange) holds
every node: ``NodePartition.whole``, and ``route`` hands messages straight back.

With ``launcher.exchange: point_to_point`` rank r of R holds a contiguous block of nodes
[lo_r, hi_r) (``contiguous_assignment``; one node per rank when R = N) together with the
directed edge slots those nodes own, and computes only their gradients and updates. A message
sent on slot s (from ``own[s]`` to ``nbr[s]``, landing in slot ``rev[s]``) stays in the process
when both ends are held there and otherwise travels in the one batched ``isend``/``irecv``
between the two ranks of that step (``Comm.exchange``), rows in sending-slot order. Which slots
send in a step follows from bookkeeping every rank replicates (step counters, live edges,
seeded link faults), so sender and receiver agree on every message count without a handshake.

``auto`` picks point-to-point when it moves no more rows per step than the all-gather of the
gradients: max over ranks of (slots arriving from other ranks · message rows per slot) ≤
N − (smallest block), i.e. for graphs whose contiguous node blocks have few outside
neighbours (rings, paths, grids, one node per host) and not for dense ones, where every rank
needs nearly every row anyway. Blocks follow node ids, not the graph: a random regular graph
cuts most of its edges and usually stays on the all-gather.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch

from fedweave.distributed.process_group import gather_rows
from fedweave.errors import UserError
from fedweave.training.chunks import chunk_blocks

if TYPE_CHECKING:
    from fedweave.config import Config
    from fedweave.data.federated import FederatedData
    from fedweave.distributed.process_group import Comm
    from fedweave.training.protocol import GradientEngine


def contiguous_assignment(n: int, world: int) -> list[list[int]]:
    """Rows 0..n-1 in ``world`` contiguous blocks of sizes differing by at most one."""
    base, extra = divmod(n, world)
    out, start = [], 0
    for r in range(world):
        size = base + (1 if r < extra else 0)
        out.append(list(range(start, start + size)))
        start += size
    return out


@dataclass
class NodePartition:
    """Nodes ``[lo, hi)`` and directed slots ``slots`` (global ids, sorted) held by ``rank``;
    ``comm`` is None when one process holds everything."""

    n: int
    slot_own: torch.Tensor            # [2E] owner node of every slot (replicated, CPU)
    slot_nbr: torch.Tensor            # [2E] neighbour node of every slot
    blocks: list[list[int]]           # nodes of each rank
    rank: int = 0
    comm: Any = None
    rank_of: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.rank_of = torch.zeros(self.n, dtype=torch.int64)
        for r, nodes in enumerate(self.blocks):
            self.rank_of[nodes] = r
        held = self.rank_of[self.slot_own] if len(self.slot_own) else self.slot_own
        self.slot_blocks = [torch.nonzero(held == r).flatten() for r in range(len(self.blocks))]
        mine = self.blocks[self.rank]
        self.lo, self.hi = (mine[0], mine[-1] + 1) if mine else (0, 0)
        self.slots = self.slot_blocks[self.rank]

    @classmethod
    def whole(cls, n: int, slot_own: torch.Tensor, slot_nbr: torch.Tensor) -> NodePartition:
        return cls(n, slot_own, slot_nbr, [list(range(n))])

    @property
    def split(self) -> bool:
        return len(self.blocks) > 1

    def incoming_rows(self) -> list[int]:
        """Per rank: slots whose message comes from another rank (one step, every edge)."""
        src, dst = self.rank_of[self.slot_own], self.rank_of[self.slot_nbr]
        return [int(((dst == r) & (src != r)).sum()) for r in range(len(self.blocks))]

    def start_round(self, round_index: int) -> None:
        if self.comm is not None:
            self.comm.start_round(round_index)

    # ------------------------------------------------------------------ messages
    def route(self, sent: torch.Tensor, payload: torch.Tensor, what: str
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``sent``: the global slots sending now (sorted; the same on every rank);
        ``payload[m, W]``: the rows of the sent slots this rank holds, in ``sent`` order.
        Returns the sent slots whose receiving node is held here and their rows, in order."""
        if not self.split:
            return sent, payload
        src = self.rank_of[self.slot_own[sent]]
        dst = self.rank_of[self.slot_nbr[sent]]
        mine_dst = dst[src == self.rank]
        to_me = dst == self.rank
        src_in = src[to_me]
        rows = payload.new_empty(int(to_me.sum()), payload.shape[1])
        sends, expect = {}, {}
        for q in range(len(self.blocks)):
            if q == self.rank:
                rows[src_in == q] = payload[mine_dst == q]
                continue
            out = mine_dst == q
            if bool(out.any()):
                sends[q] = payload[out]
            count = int((src_in == q).sum())
            if count:
                expect[q] = count
        received = self.comm.exchange(sends, expect, payload.shape[1], payload.dtype, what)
        for q, block in received.items():
            rows[src_in == q] = block.to(rows.device)
        return sent[to_me], rows

    # ------------------------------------------------------------------ gathering state
    def gather_nodes(self, fields: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Held node rows ``[hi − lo, ...]`` → all N rows, on every rank."""
        if not self.split or not fields:
            return fields
        return gather_rows(self.comm, fields, self.blocks, self.n, "node state all_gather")

    def gather_slots(self, fields: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Held slot rows → all 2E slot rows, on every rank."""
        if not self.split or not fields:
            return fields
        blocks = [s.tolist() for s in self.slot_blocks]
        return gather_rows(self.comm, fields, blocks, len(self.slot_own), "slot state all_gather")

    def gather_lists(self, fields: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Rows of any length per rank, concatenated in rank order (e.g. pending messages)."""
        if not self.split or not fields:
            return fields
        mine = torch.tensor([len(next(iter(fields.values())))], device=self.comm.device)
        counts = [int(c) for c in self.comm.all_gather(mine, "message count all_gather")]
        starts = [sum(counts[:r]) for r in range(len(counts))]
        layout = [list(range(s, s + c)) for s, c in zip(starts, counts, strict=True)]
        return gather_rows(self.comm, fields, layout, sum(counts), "message all_gather")


class Placement(Protocol):
    """What ``node_partition`` reads of a run (``fedweave.context.RunContext`` is one)."""

    @property
    def config(self) -> Config: ...

    @property
    def data(self) -> FederatedData: ...

    @property
    def comm(self) -> Comm | None: ...

    @property
    def engine(self) -> GradientEngine: ...

    @property
    def local_engine(self) -> GradientEngine: ...


def node_partition(ctx: Placement, slot_own: torch.Tensor, slot_nbr: torch.Tensor,
                   message_rows: int) -> tuple[NodePartition, GradientEngine, str]:
    """The partition for this process, the gradient engine that computes the held rows and the
    exchange in use (``local``, ``all_gather`` or ``point_to_point``; module docstring)."""
    n, mode = ctx.data.nodes, ctx.config.launcher.exchange
    comm = getattr(ctx, "comm", None)
    whole = NodePartition.whole(n, slot_own, slot_nbr)
    if comm is None or comm.world == 1:
        return whole, ctx.engine, "local"
    chunk = int(getattr(ctx.local_engine, "chunk", 1))  # batched engines: whole chunks
    blocks = chunk_blocks(n, chunk, comm.world)
    split = NodePartition(n, slot_own, slot_nbr, blocks, comm.rank, comm)
    if mode == "auto":
        gather = n - min(len(b) for b in blocks)
        p2p = max(split.incoming_rows()) * message_rows
        mode = "point_to_point" if min(len(b) for b in blocks) and p2p <= gather \
            else "all_gather"
    if mode == "all_gather":
        return whole, ctx.engine, mode
    if not all(blocks):
        raise UserError(f"launcher.exchange=point_to_point needs at least one chunk of nodes per "
                        f"process: {comm.world} processes for data.nodes={n} in chunks of "
                        f"{chunk} (engine.chunk); start at most {-(-n // chunk)} processes, set "
                        "engine.chunk=1 (one node per process) or use launcher.exchange=all_gather")
    return split, ctx.local_engine, mode
