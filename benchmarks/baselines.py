"""Reference implementations the benchmark compares fedweave with.

- ``sequential_fedavg``: FedAvg written the obvious way in plain PyTorch: per sampled client a
  ``copy.deepcopy`` of the global model, a ``torch.optim.SGD`` and a ``DataLoader`` over a
  ``TensorDataset`` of its shard; the server averages the state dicts weighted by shard size.
- ``sequential_dsgd``: D-SGD the same way: N model copies, one optimizer and one DataLoader
  iterator per node; each step every node takes one SGD step, then x_i ← Σ_j W_ij x_j.
- ``centralized``: the limit: one model, one optimizer, the same number of SGD steps and
  samples, batches by indexing one tensor (no per-client anything).

Inputs are float tensors already normalised (the conversion is done once, outside the timing
of nothing: every row pays its own data preparation inside its subprocess).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 2048) -> float:
    model.eval()
    correct = 0
    for s in range(0, len(y), batch):
        correct += int((model(x[s: s + batch]).argmax(1) == y[s: s + batch]).sum())
    model.train()
    return correct / max(len(y), 1)


def sequential_fedavg(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      shards: Sequence[torch.Tensor], cohorts: Sequence[Sequence[int]],
                      lr: float, batch_size: int, epochs: int = 1, seed: int = 0) -> nn.Module:
    """FedAvg (McMahan et al. 2017), one client after the other."""
    torch.manual_seed(seed)
    global_model = model
    for cohort in cohorts:
        states, weights = [], []
        for client in cohort:
            local = copy.deepcopy(global_model)
            opt = torch.optim.SGD(local.parameters(), lr=lr)
            idx = shards[client]
            loader = DataLoader(TensorDataset(x[idx], y[idx]), batch_size=batch_size,
                                shuffle=True)
            for _ in range(epochs):
                for xb, yb in loader:
                    opt.zero_grad()
                    F.cross_entropy(local(xb), yb).backward()
                    opt.step()
            states.append(local.state_dict())
            weights.append(float(len(idx)))
        total = sum(weights)
        avg = {k: sum(w / total * s[k] for w, s in zip(weights, states, strict=True))
               for k in states[0]}
        global_model.load_state_dict(avg)
    return global_model


def sequential_dsgd(model_fn: Callable[[], nn.Module], x: torch.Tensor, y: torch.Tensor,
                    shards: Sequence[torch.Tensor], mixing: torch.Tensor, steps: int,
                    lr: float, batch_size: int, seed: int = 0) -> list[nn.Module]:
    """D-SGD (Lian et al. 2017): local SGD step per node, then neighbourhood averaging."""
    torch.manual_seed(seed)
    base = model_fn()
    models = [copy.deepcopy(base) for _ in shards]
    opts = [torch.optim.SGD(m.parameters(), lr=lr) for m in models]
    loaders = [DataLoader(TensorDataset(x[i], y[i]), batch_size=batch_size, shuffle=True)
               for i in shards]
    iters = [iter(dl) for dl in loaders]
    w = mixing.to(torch.float32)
    for _ in range(steps):
        for i, (m, opt) in enumerate(zip(models, opts, strict=True)):
            try:
                xb, yb = next(iters[i])
            except StopIteration:
                iters[i] = iter(loaders[i])
                xb, yb = next(iters[i])
            opt.zero_grad()
            F.cross_entropy(m(xb), yb).backward()
            opt.step()
        states = [m.state_dict() for m in models]
        new = []
        for i in range(len(models)):
            nbrs = torch.nonzero(w[i]).flatten().tolist()
            new.append({k: sum(float(w[i, j]) * states[j][k] for j in nbrs) for k in states[i]})
        for m, s in zip(models, new, strict=True):
            m.load_state_dict(s)
    return models


def centralized(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                batch_size: int, seed: int = 0) -> nn.Module:
    """The limit: ``steps`` minibatch SGD steps of one model on random batches of the union."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    n = len(y)
    perm = torch.randperm(n, generator=gen).to(x.device)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=gen).to(x.device), 0
        idx = perm[pos: pos + batch_size]
        pos += batch_size
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model
