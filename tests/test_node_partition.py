"""Node partitions of decentralized runs over processes (fedweave.distributed.placement): which
rows and slots a rank holds, how the exchange is chosen, and routing within one process."""

from __future__ import annotations

from types import SimpleNamespace

import networkx as nx
import pytest
import torch

from fedweave.distributed.placement import NodePartition, contiguous_assignment, node_partition
from fedweave.errors import UserError
from fedweave.topology import edge_list


def _slots(graph: nx.Graph) -> tuple[torch.Tensor, torch.Tensor]:
    ends = edge_list(graph)
    return torch.cat([ends[:, 0], ends[:, 1]]), torch.cat([ends[:, 1], ends[:, 0]])


def _ctx(n: int, world: int, rank: int, exchange: str = "auto") -> SimpleNamespace:
    engine = SimpleNamespace(name="distributed+loop", inner=SimpleNamespace(name="loop"))
    return SimpleNamespace(
        data=SimpleNamespace(nodes=n), engine=engine, local_engine=engine.inner,
        config=SimpleNamespace(launcher=SimpleNamespace(exchange=exchange)),
        comm=SimpleNamespace(world=world, rank=rank))


def test_split_partition_holds_contiguous_nodes_and_their_slots() -> None:
    own, nbr = _slots(nx.cycle_graph(8))
    parts = [NodePartition(8, own, nbr, contiguous_assignment(8, 3), r) for r in range(3)]
    assert [(p.lo, p.hi) for p in parts] == [(0, 3), (3, 6), (6, 8)]
    held = torch.cat([p.slots for p in parts]).sort().values
    assert torch.equal(held, torch.arange(16))  # every directed slot held exactly once
    for p in parts:
        assert bool(((own[p.slots] >= p.lo) & (own[p.slots] < p.hi)).all())
    # a ring cut into 3 arcs: each arc receives from its two outside neighbours
    assert parts[0].incoming_rows() == [2, 2, 2]


def test_whole_partition_routes_messages_back_unchanged() -> None:
    own, nbr = _slots(nx.cycle_graph(5))
    part = NodePartition.whole(5, own, nbr)
    assert not part.split and (part.lo, part.hi) == (0, 5) and len(part.slots) == 10
    sent, payload = torch.tensor([1, 4, 7]), torch.randn(3, 6)
    src, rows = part.route(sent, payload, "test")
    assert src is sent and rows is payload
    assert part.gather_nodes({"x": payload}) == {"x": payload}


@pytest.mark.parametrize(("graph", "world", "expected"), [
    (nx.cycle_graph(16), 2, "point_to_point"),    # 2 boundary rows vs 8 all-gathered rows
    (nx.cycle_graph(3), 3, "point_to_point"),     # one node per rank
    (nx.complete_graph(8), 2, "all_gather"),      # 16 boundary rows vs 4
    (nx.cycle_graph(3), 4, "all_gather"),         # a rank would hold no node
])
def test_auto_exchange_picks_point_to_point_for_sparse_graphs(graph: nx.Graph, world: int,
                                                             expected: str) -> None:
    own, nbr = _slots(graph)
    n = graph.number_of_nodes()
    part, engine, mode = node_partition(_ctx(n, world, 0), own, nbr, 1)  # type: ignore[arg-type]
    assert mode == expected
    assert part.split == (mode == "point_to_point")
    assert engine.name == ("loop" if part.split else "distributed+loop")


def test_point_to_point_with_more_processes_than_nodes_is_a_user_error() -> None:
    own, nbr = _slots(nx.cycle_graph(3))
    with pytest.raises(UserError, match="at most 3 processes"):
        node_partition(_ctx(3, 4, 0, "point_to_point"), own, nbr, 1)  # type: ignore[arg-type]


def test_single_process_is_local_whatever_the_setting() -> None:
    own, nbr = _slots(nx.cycle_graph(4))
    ctx = _ctx(4, 1, 0, "point_to_point")
    ctx.comm = None
    part, engine, mode = node_partition(ctx, own, nbr, 1)  # type: ignore[arg-type]
    assert mode == "local" and not part.split and engine is ctx.engine


class _FakeComm:
    """Stands in for a rank's Comm: records what it sends; answers with ``replies`` (or zeros
    of the expected size)."""

    def __init__(self, replies: dict[int, torch.Tensor] | None = None) -> None:
        self.replies = replies
        self.sent: dict[int, torch.Tensor] = {}

    def exchange(self, sends: dict[int, torch.Tensor], expect: dict[int, int], width: int,
                 dtype: torch.dtype, what: str) -> dict[int, torch.Tensor]:
        self.sent = sends
        if self.replies is None:
            return {q: torch.zeros(c, width, dtype=dtype) for q, c in expect.items()}
        assert {q: len(v) for q, v in self.replies.items()} == expect
        return self.replies


def test_split_route_delivers_every_message_to_its_receiving_slot_in_order() -> None:
    """Two ranks on a ring of 6: every sent slot's row reaches the rank holding its receiver,
    local ones without communication, remote ones in sending-slot order."""
    own, nbr = _slots(nx.cycle_graph(6))
    blocks = contiguous_assignment(6, 2)
    sent = torch.tensor([0, 2, 3, 5, 6, 8, 9, 11])  # sending slots (global, sorted)
    value = sent.to(torch.float64).view(-1, 1) * 10  # the row slot s sends is 10·s

    def payload(part: NodePartition) -> torch.Tensor:
        return value[(own[sent] >= part.lo) & (own[sent] < part.hi)]

    rank1 = NodePartition(6, own, nbr, blocks, 1, _FakeComm())
    rank1.route(sent, payload(rank1), "test")
    rank0 = NodePartition(6, own, nbr, blocks, 0, _FakeComm({1: rank1.comm.sent[0]}))
    src, rows = rank0.route(sent, payload(rank0), "test")
    expected = sent[nbr[sent] < 3]  # receivers held by rank 0
    assert torch.equal(src, expected)
    torch.testing.assert_close(rows, expected.to(torch.float64).view(-1, 1) * 10)
    assert bool((own[src] >= 3).any()) and bool((own[src] < 3).any())  # both paths used
