"""``batch_schedule`` draws exactly what its docstring defines: per row a generator seeded from
(seed, purpose, key or row key, node), a stream of concatenated permutations of the shard,
step s taking samples [s·b, (s+1)·b), padding inside the row's own shard with weight 0."""

from __future__ import annotations

import math

import pytest
import torch

from fedweave.data.federated import FederatedData
from fedweave.rng import torch_generator
from fedweave.training.batches import batch_schedule


def _data(sizes: list[int]) -> FederatedData:
    total = sum(sizes)
    x = torch.zeros(total, 1, 2, 2, dtype=torch.uint8)
    y = torch.zeros(total, dtype=torch.int64)
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    shards = [torch.arange(a, a + n) for a, n in zip(starts, sizes, strict=True)]
    return FederatedData(x, y, x[:2], y[:2], 2, None, None, shards, shards, seed=7)


def _definition(data: FederatedData, nodes: list[int], steps: list[int], batch: int,
                key: tuple[int, ...], shuffle: bool, row_keys: list[int] | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    width = min(batch, max(len(data.train_idx[n]) for n in nodes))
    idx = torch.zeros(len(nodes), max(steps), width, dtype=torch.int64)
    weight = torch.zeros(len(nodes), max(steps), width)
    for k, (node, s) in enumerate(zip(nodes, steps, strict=True)):
        shard = data.train_idx[node]
        n, b = len(shard), min(batch, len(shard))
        gen = torch_generator(data.seed, "batches", *(key if row_keys is None else
                                                      (row_keys[k],)), node)
        stream = torch.cat([torch.randperm(n, generator=gen)
                            for _ in range(math.ceil(s * b / n))])
        if shuffle:
            stream = stream[:s * b][torch.randperm(s * b, generator=gen)]
        idx[k] = shard[0]
        idx[k, :s, :b] = shard[stream[:s * b]].view(s, b)
        weight[k, :s, :b] = 1.0
    return idx, weight


@pytest.mark.parametrize(("sizes", "nodes", "steps", "shuffle", "row_keys"), [
    ([60] * 5, [3, 0, 4], [3, 3, 3], False, None),            # equal shards: no padding
    ([60, 10, 45, 7], [0, 1, 2, 3], [3, 2, 4, 1], False, None),  # padding, b < width, reuse
    ([60, 10, 45, 7], [2, 3], [5, 9], True, None),            # several permutations, shuffled
    ([30] * 4, [1, 1, 2], [2, 2, 2], False, [5, 6, 5]),       # asynchronous jobs' row keys
])
def test_the_schedule_is_its_definition(sizes: list[int], nodes: list[int], steps: list[int],
                                        shuffle: bool, row_keys: list[int] | None) -> None:
    data = _data(sizes)
    got = batch_schedule(data, torch.tensor(nodes), torch.tensor(steps), 20, (4,),
                         shuffle=shuffle,
                         row_keys=None if row_keys is None else torch.tensor(row_keys))
    idx, weight = _definition(data, nodes, steps, 20, (4,), shuffle, row_keys)
    assert torch.equal(got.idx, idx)
    assert torch.equal(got.weight, weight)
    assert torch.equal(got.steps, torch.tensor(steps))
