"""Local training of many node models on their shards (DESIGN §3 Local training).

A *gradient engine* computes, for a stack of node models ``params[K, P]`` and one batch per
node ``idx[K, B]``, the minibatch gradients ``[K, P]``. Local SGD (``LocalTrainer.train``) and
the decentralized algorithms are written once on top of it with the functional optimizers of
``training.optim``; the engines differ only in how gradients are computed:

- ``LoopEngine``: one model at a time with plain autograd (works for every model, BatchNorm
  included);
- ``VectorizedEngine`` (``training.vectorized``): ``torch.func`` ``vmap(grad)`` over the stack.

Batches: node i's samples for a round are a stream of concatenated random permutations of its
shard (RNG from (seed, "batches", round, node)); step s takes the next ``min(B, n_i)`` samples,
so one round visits every sample ``local_epochs`` times. Unequal step counts are padded: finished
nodes are masked (``active``) and never updated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from fedweave.config import TrainConfig
from fedweave.data.federated import FederatedData
from fedweave.population import Buffers, ParamLayout, load_flat
from fedweave.rng import derive_seed, torch_generator
from fedweave.training.optim import FunctionalOptimizer


@dataclass
class Batches:
    """Per-node batch indices ``idx[K, S, B]`` into the training tensors, ``weight`` 1 for real
    samples and 0 for padding, ``steps[K]`` real steps per node."""

    idx: torch.Tensor
    weight: torch.Tensor
    steps: torch.Tensor


@dataclass
class StepOutput:
    grads: torch.Tensor        # [K, P]
    loss: torch.Tensor         # [K] mean cross-entropy of the batch
    correct: torch.Tensor      # [K] correctly classified samples in the batch
    count: torch.Tensor        # [K] samples in the batch
    buffers: Buffers


@dataclass
class LocalResult:
    """Models after local training and what they saw."""

    params: torch.Tensor       # [K, P]
    buffers: Buffers
    num_samples: torch.Tensor  # [K] training shard sizes (aggregation weights)
    steps: torch.Tensor        # [K]
    loss: torch.Tensor         # [K] mean training loss over the round's steps
    acc: torch.Tensor          # [K]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def mean_train(self) -> tuple[float, float]:
        """Training loss and accuracy of the cohort, weighted by shard size n_i."""
        w = self.num_samples / self.num_samples.sum()
        return float(w @ self.loss), float(w @ self.acc)


class GradientEngine(Protocol):
    name: str

    def grads(self, params: torch.Tensor, buffers: Buffers, idx: torch.Tensor,
              weight: torch.Tensor, active: torch.Tensor, key: tuple[int, ...],
              nodes: torch.Tensor) -> StepOutput: ...

    def evaluate(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def weighted_ce(logits: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Σ_b w_b CE_b / Σ_b w_b (padding samples have w = 0)."""
    return (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum().clamp(min=1)


class LoopEngine:
    """Plain autograd, one node model at a time."""

    name = "loop"
    calibration: dict[str, Any] | None = None  # how the engine was chosen (engine.backend)

    def __init__(self, model: nn.Module, layout: ParamLayout, data: FederatedData,
                 seed: int, eval_batch: int = 2048) -> None:
        self.model, self.layout, self.data, self.seed = model, layout, data, seed
        self.eval_batch = eval_batch
        self.has_dropout = any(isinstance(m, nn.Dropout | nn.Dropout2d)
                               for m in model.modules())

    def _load(self, params: torch.Tensor, buffers: Buffers, k: int) -> None:
        load_flat(self.model, params[k])
        for name, buf in self.model.named_buffers():
            buf.copy_(buffers[name][k])

    def grads(self, params: torch.Tensor, buffers: Buffers, idx: torch.Tensor,
              weight: torch.Tensor, active: torch.Tensor, key: tuple[int, ...],
              nodes: torch.Tensor) -> StepOutput:
        k_count = params.shape[0]
        grads = torch.zeros_like(params)
        loss = torch.zeros(k_count, dtype=params.dtype, device=params.device)
        correct = torch.zeros_like(loss)
        count = weight.sum(1).to(params.dtype)
        buffers = {n: b.clone() for n, b in buffers.items()}
        self.model.train()
        plist = list(self.model.parameters())
        for k in torch.nonzero(active).flatten().tolist():
            node = int(nodes[k])
            self._load(params, buffers, k)
            real = weight[k] > 0
            xb, yb = self.data.gather(idx[k][real], augment_key=(*key, node))
            if self.has_dropout:
                torch.manual_seed(derive_seed(self.seed, "dropout", *key, node))
            logits = self.model(xb)
            batch_loss = F.cross_entropy(logits, yb)
            g = torch.autograd.grad(batch_loss, plist)
            grads[k] = torch.cat([t.reshape(-1) for t in g])
            loss[k] = batch_loss.detach()
            correct[k] = (logits.argmax(1) == yb).sum()
            for name, buf in self.model.named_buffers():
                buffers[name][k] = buf
        return StepOutput(grads, loss, correct, count, buffers)

    @torch.no_grad()
    def evaluate(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy and accuracy of each model ``params[M]`` on (x, y)."""
        self.model.eval()
        m = params.shape[0]
        loss = torch.zeros(m, dtype=torch.float64)
        correct = torch.zeros(m, dtype=torch.float64)
        for k in range(m):
            self._load(params, buffers, k)
            for start in range(0, len(y), self.eval_batch):
                xb = self.data.features(x[start: start + self.eval_batch])
                yb = y[start: start + self.eval_batch]
                logits = self.model(xb)
                loss[k] += F.cross_entropy(logits, yb, reduction="sum").item()
                correct[k] += (logits.argmax(1) == yb).sum().item()
        n = max(len(y), 1)
        return loss / n, correct / n


def batch_width(data: FederatedData, nodes: torch.Tensor, batch_size: int) -> int:
    """Padded batch width of a stack of ``nodes``: min(B, largest shard)."""
    return min(batch_size, max(len(data.train_idx[int(n)]) for n in nodes))


def batch_schedule(data: FederatedData, nodes: torch.Tensor, steps: torch.Tensor,
                   batch_size: int, key: tuple[int, ...], purpose: str = "batches",
                   width: int | None = None) -> Batches:
    """Batches of each node for one round: step s of node i takes samples
    [s·b_i, (s+1)·b_i) of a stream of random permutations of its shard, b_i = min(B, n_i).
    ``width``: padded width (default ``batch_width``); a process computing part of a stack
    passes the whole stack's width, because a batched engine's float reductions over the
    batch depend on it."""
    k_count, s_max = len(nodes), int(steps.max()) if len(steps) else 0
    if width is None:
        width = batch_width(data, nodes, batch_size)
    idx = torch.zeros(k_count, s_max, width, dtype=torch.int64)
    weight = torch.zeros(k_count, s_max, width)
    for k, node in enumerate(nodes.tolist()):
        shard = data.train_idx[node]
        n, s = len(shard), int(steps[k])
        b = min(batch_size, n)
        gen = torch_generator(data.seed, purpose, *key, node)
        need = s * b
        stream = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(need / n))])
        idx[k, :s, :b] = shard[stream[:need]].view(s, b)
        weight[k, :s, :b] = 1.0
    return Batches(idx.to(data.x.device), weight.to(data.x.device), steps)


def local_steps(cfg: TrainConfig, sizes: torch.Tensor) -> torch.Tensor:
    """Steps per node: ``local_steps`` or ⌈local_epochs · n_i / min(B, n_i)⌉."""
    if cfg.local_steps is not None:
        return torch.full_like(sizes, cfg.local_steps)
    b = sizes.clamp(max=cfg.batch_size)
    return torch.ceil(cfg.local_epochs * sizes / b).to(torch.int64).clamp(min=1)


class LocalTrainer:
    """Local SGD of a cohort: the engine gives gradients, the functional optimizer steps."""

    def __init__(self, engine: GradientEngine, data: FederatedData, cfg: TrainConfig) -> None:
        self.engine, self.data, self.cfg = engine, data, cfg
        self.optimizer = FunctionalOptimizer(cfg)

    def train(self, nodes: torch.Tensor, params: torch.Tensor, buffers: Buffers,
              round_index: int, lr: float, *, prox_mu: float = 0.0,
              center: torch.Tensor | None = None, correction: torch.Tensor | None = None,
              mask: torch.Tensor | None = None, width: int | None = None) -> LocalResult:
        """Train ``params[K]`` (one row per node in ``nodes``; not modified: training runs on
        one working copy, updated in place) for the round. ``center`` may be ``[P]``.

        Per step: g ← ∇CE + λ·x (l2_lambda) + μ(x − center) (FedProx) + correction (SCAFFOLD's
        c − c_i); x ← optimizer(x, g).
        """
        sizes = self.data.sizes[nodes]
        steps = local_steps(self.cfg, sizes)
        batches = batch_schedule(self.data, nodes, steps, self.cfg.batch_size, (round_index,),
                                 width=width)
        params = params.clone()
        state = self.optimizer.init(params)
        loss_sum = torch.zeros(len(nodes), dtype=params.dtype, device=params.device)
        correct = torch.zeros_like(loss_sum)
        seen = torch.zeros_like(loss_sum)
        steps_dev = steps.to(params.device)
        for s in range(batches.idx.shape[1]):
            active = steps_dev > s
            out = self.engine.grads(params, buffers, batches.idx[:, s], batches.weight[:, s],
                                    active, (round_index, s), nodes)
            g = out.grads  # a fresh tensor: the regularisers are added in place
            if self.cfg.l2_lambda:
                g.add_(params, alpha=self.cfg.l2_lambda)
            if prox_mu and center is not None:
                g.add_(params - center, alpha=prox_mu)
            if correction is not None:
                g.add_(correction)
            params = self.optimizer.step(params, g, state, lr, active, mask, inplace=True)
            buffers = out.buffers
            act = active.to(params.dtype)
            loss_sum += out.loss * out.count * act
            correct += out.correct * act
            seen += out.count * act
        seen = seen.clamp(min=1)
        return LocalResult(params, buffers, sizes.to(params.dtype), steps, loss_sum / seen,
                           correct / seen)
