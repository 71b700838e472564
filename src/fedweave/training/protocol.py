"""What a gradient engine computes and what local training returns.

A *gradient engine* computes, for a stack of node models ``params[K, P]`` and one batch per
node ``idx[K, B]`` (global training indices, ``weight`` 1 for real samples and 0 for padding),
the minibatch gradients of the objective's data term, ``[K, P]``. Local SGD
(``training.trainer``) and the decentralized algorithms are written once on top of it; the
engines (``training.loop``, ``training.vectorized``) differ only in how gradients are computed.
Engines also give per-sample outputs (losses, gradients of chosen parameters, input
gradients; ``training.persample``), which influence scoring, DP-SGD and DeepInversion use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from fedweave.core.population import Buffers
from fedweave.training.objectives import DataLoss


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
    loss: torch.Tensor         # [K] mean data loss of the batch
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
        if len(self.num_samples) == 0:
            return float("nan"), float("nan")
        w = self.num_samples / self.num_samples.sum()
        return float(w @ self.loss), float(w @ self.acc)

    def select(self, rows: torch.Tensor) -> LocalResult:
        """The results of ``rows`` only (e.g. the clients that arrived)."""
        r = rows.to(self.params.device)
        rc = rows.to(self.steps.device)
        return LocalResult(self.params[r], {k: v[r] for k, v in self.buffers.items()},
                           self.num_samples[r], self.steps[rc], self.loss[r], self.acc[r],
                           {k: v[r] for k, v in self.extras.items()})


class GradientEngine(Protocol):
    """Computes gradients and evaluations of stacked node models (``loop`` or ``vectorized``,
    or the distributed wrapper that splits the rows across processes)."""

    name: str
    calibration: dict[str, Any] | None

    def grads(self, params: torch.Tensor, buffers: Buffers, idx: torch.Tensor,
              weight: torch.Tensor, active: torch.Tensor, key: tuple[int, ...],
              nodes: torch.Tensor, loss: DataLoss | None = None) -> StepOutput: ...

    def evaluate(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def evaluate_sums(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
