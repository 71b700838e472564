"""Which samples each node trains on: per-round batch schedules.

Node i's samples for a round are a stream of concatenated random permutations of its shard
(RNG from (seed, "batches", round, node)); step s takes the next ``min(B, n_i)`` samples, so
one round visits every sample ``local_epochs`` times. With ``train.epoch_samples`` = m an epoch
is m samples whatever the shard size n_i: the stream's first s_i·b_i samples (each shard
sample ⌊m/n_i⌋ or ⌈m/n_i⌉ times per epoch) in a random order, as reference system 001 draws its
``train_data_length`` samples. Unequal step counts are padded: finished nodes are masked
(``active``) and never updated.
"""

from __future__ import annotations

import torch

from fedweave.config import TrainConfig
from fedweave.data.federated import FederatedData
from fedweave.memory import require_memory
from fedweave.rng import derive_seed
from fedweave.training.protocol import Batches


def batch_width(data: FederatedData, nodes: torch.Tensor, batch_size: int) -> int:
    """Padded batch width of a stack of ``nodes``: min(B, largest shard)."""
    return min(batch_size, max(len(data.train_idx[int(n)]) for n in nodes))


#: bytes of a schedule below which its memory is not checked (the common case: no file read)
SCHEDULE_CHECKED = 1 << 28


def check_schedule(rows: int, steps: int, width: int) -> None:
    """Refuse a round's batch schedule that cannot fit: indices (int64) and weights (float32)
    of ``rows`` × ``steps`` × ``width`` samples, and one row's sample stream (int64, twice)."""
    nbytes = rows * steps * width * 12 + steps * width * 16
    if nbytes > SCHEDULE_CHECKED:
        require_memory(nbytes, f"a round of {steps:,} local steps × batch {width} for {rows} "
                       "nodes (its sample schedule)", "lower train.local_steps, "
                       "train.local_epochs or train.epoch_samples")


def batch_schedule(data: FederatedData, nodes: torch.Tensor, steps: torch.Tensor,
                   batch_size: int, key: tuple[int, ...], purpose: str = "batches",
                   width: int | None = None, shuffle: bool = False,
                   row_keys: torch.Tensor | None = None) -> Batches:
    """Batches of each node for one round: step s of node i takes samples
    [s·b_i, (s+1)·b_i) of a stream of random permutations of its shard, b_i = min(B, n_i).
    ``width``: padded width (default ``batch_width``); a process computing part of a stack
    passes the whole stack's width, because a batched engine's float reductions over the
    batch depend on it. ``shuffle``: permute the drawn samples (``train.epoch_samples``), so
    repeated samples are spread over the epoch. ``row_keys[k]`` replaces ``key`` for row k
    (asynchronous jobs trained together: row k's stream is (seed, purpose, row_keys[k], node),
    its own job's)."""
    k_count, s_max = len(nodes), int(steps.max()) if len(steps) else 0
    if width is None:
        width = batch_width(data, nodes, batch_size) if k_count else 1
    check_schedule(k_count, s_max, width)
    gen = torch.Generator()  # reseeded per row: the same draws as a fresh generator each
    rows: list[tuple[torch.Tensor, torch.Tensor, int, int]] = []  # (shard, samples, s, b)
    for k, (node, s) in enumerate(zip(nodes.tolist(), steps.tolist(), strict=True)):
        shard = data.train_idx[node]
        n = len(shard)
        b = min(batch_size, n)
        row_key = key if row_keys is None else (int(row_keys[k]),)
        gen.manual_seed(derive_seed(data.seed, purpose, *row_key, node))
        need = s * b
        stream = (torch.randperm(n, generator=gen) if need <= n else
                  torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))]))
        if shuffle:
            stream = stream[:need][torch.randperm(need, generator=gen)]
        rows.append((shard, shard[stream[:need]], s, b))
    if k_count and all(s == s_max and b == width for _, _, s, b in rows):  # no padding
        idx = torch.stack([picked for _, picked, _, _ in rows]).view(k_count, s_max, width)
        weight = torch.ones(k_count, s_max, width)
    else:
        idx = torch.zeros(k_count, s_max, width, dtype=torch.int64)
        weight = torch.zeros(k_count, s_max, width)
        for k, (shard, picked, s, b) in enumerate(rows):
            idx[k] = shard[0]  # padding (weight 0) stays inside the node's own shard
            idx[k, :s, :b] = picked.view(s, b)
            weight[k, :s, :b] = 1.0
    return Batches(idx.to(data.x.device), weight.to(data.x.device), steps)


def local_steps(cfg: TrainConfig, sizes: torch.Tensor) -> torch.Tensor:
    """Steps per node: ``local_steps`` or ⌈local_epochs · m_i / min(B, n_i)⌉, m_i =
    ``epoch_samples`` or the shard size n_i."""
    if cfg.local_steps is not None:
        return torch.full_like(sizes, cfg.local_steps)
    b = sizes.clamp(max=cfg.batch_size)
    m = sizes if cfg.epoch_samples is None else torch.full_like(sizes, cfg.epoch_samples)
    return torch.ceil(cfg.local_epochs * m / b).to(torch.int64).clamp(min=1)
