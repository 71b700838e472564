"""ClientStore: the stacked per-client rows personalised methods keep."""

import torch

from fedweave.core.client_store import ClientStore


def test_gather_default_scatter_and_growth() -> None:
    store = ClientStore(1000, 3)
    default = torch.tensor([1.0, 2.0, 3.0])
    first = torch.tensor([5, 999, 7])
    assert torch.equal(store.gather(first, default), default.expand(3, 3))
    store.scatter(first, torch.arange(9.0).view(3, 3))
    assert len(store) == 3 and store.seen(torch.tensor([5, 6])).tolist() == [True, False]
    got = store.gather(torch.tensor([7, 6, 5]), default)
    assert got.tolist() == [[6.0, 7.0, 8.0], [1.0, 2.0, 3.0], [0.0, 1.0, 2.0]]
    many = torch.arange(100, 140)
    store.scatter(many, torch.ones(40, 3))
    assert len(store) == 43 and store.gather(torch.tensor([999]))[0].tolist() == [3.0, 4.0, 5.0]
    # memory is the slot index plus the rows of clients seen, not clients x width
    assert store.nbytes() < 1000 * 4 + 2 * 43 * 3 * 4 + 16 * 3 * 4


def test_state_round_trip_is_exact() -> None:
    store = ClientStore(50, 4)
    store.scatter(torch.tensor([3, 9]), torch.randn(2, 4))
    copy = ClientStore(50, 4)
    copy.load({k: v.clone() for k, v in store.state().items()})
    ids = torch.tensor([9, 3, 0])
    assert torch.equal(copy.gather(ids), store.gather(ids))
    copy.scatter(torch.tensor([11]), torch.ones(1, 4))
    assert len(copy) == 3 and len(store) == 2
