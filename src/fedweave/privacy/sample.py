"""Sample-level differential privacy: DP-SGD (Abadi et al. 2016) inside local training.

At local step s of round r, node i draws its batch from its own shard of n_i samples — Poisson
(each sample independently with q_i = b_i/n_i) or fixed (b_i of n_i without replacement), with
b_i = min(B, n_i) and the stream (seed, "dp-batches", r, s, i) — and its gradient is

    g_i = (Σ_{b ∈ batch} clip_C(∇ℓ_b) + z) / b_i,   z ~ N(0, (σ·C)²·I)

(z from (seed, "dp-sgd", r, s, i)) with per-sample gradients from ``torch.func``
(``PerSample.sample_grads``: evaluation mode, so no dropout; BatchNorm is refused) over the
node's real samples only. Every engine runs the same
per-node computation, so the loop and vectorized engines and any number of processes give the
same numbers. Each step is one subsampled Gaussian release of node i's data; ε_i after T_i
steps is the accountant's, and the run reports the largest ε_i (``SampleLedger``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from fedweave.config import PrivacyConfig, TrainConfig
from fedweave.core.population import Buffers
from fedweave.data.federated import FederatedData
from fedweave.errors import UserError
from fedweave.models import uses_batchnorm
from fedweave.privacy.accountant import check_target, epsilon
from fedweave.rng import numpy_rng, torch_generator
from fedweave.training.batches import local_steps
from fedweave.training.objectives import CROSS_ENTROPY, DataLoss
from fedweave.training.protocol import GradientEngine, StepOutput


class SampleDPEngine:
    """A gradient engine whose ``grads`` are DP-SGD's privatised minibatch gradients (module
    docstring); everything else (evaluation, per-sample outputs) is the wrapped engine's."""

    def __init__(self, inner: GradientEngine, privacy: PrivacyConfig, train: TrainConfig,
                 data: FederatedData, seed: int) -> None:
        model = getattr(inner, "model", None)
        if model is not None and uses_batchnorm(model):
            raise UserError("privacy.level=sample clips per-sample gradients; BatchNorm mixes "
                            "the samples of a batch: set model.norm=group or none")
        self.inner, self.privacy, self.data, self.seed = inner, privacy, data, seed
        self.batch = train.batch_size
        self.name = inner.name
        self.calibration = inner.calibration

    def __getattr__(self, item: str) -> Any:  # model, layout, sample_grads, ... of the inner one
        return getattr(self.inner, item)

    def draw(self, node: int, key: tuple[int, ...]) -> torch.Tensor:
        """The node's batch (global training indices) of step ``key`` = (round, step)."""
        shard = self.data.train_idx[node]
        n = len(shard)
        b = min(self.batch, n)
        rng = numpy_rng(self.seed, "dp-batches", *key, node)
        if self.privacy.sampling == "poisson":
            pick = np.nonzero(rng.random(n) < b / n)[0]
        else:
            pick = np.sort(rng.choice(n, b, replace=False))
        return shard[torch.from_numpy(pick)]

    def grads(self, params: torch.Tensor, buffers: Buffers, idx: torch.Tensor,
              weight: torch.Tensor, active: torch.Tensor, key: tuple[int, ...],
              nodes: torch.Tensor, loss: DataLoss | None = None) -> StepOutput:
        p = self.privacy
        loss = loss or CROSS_ENTROPY
        k_count = params.shape[0]
        grads = torch.zeros_like(params)
        losses = params.new_zeros(k_count)
        correct, count = params.new_zeros(k_count), params.new_zeros(k_count)
        for k in torch.nonzero(active).flatten().tolist():
            node = int(nodes[k])
            rows = self.draw(node, key).to(self.data.y.device)
            xb, yb = self.data.gather(rows)
            own = {name: b[k] for name, b in buffers.items()}
            per = self.inner.sample_grads(params[k], own, xb, yb, idx=rows,  # type: ignore[attr-defined]
                                          loss=loss)
            if math.isfinite(p.clip) and len(per):
                norm = per.norm(dim=1, keepdim=True)
                per = per * (p.clip / norm.clamp_min(1e-30)).clamp(max=1.0)
            total = per.sum(0)
            if p.noise_multiplier:
                z = torch.randn(params.shape[1], generator=torch_generator(
                    self.seed, "dp-sgd", *key, node), dtype=params.dtype)
                total = total + (p.noise_multiplier * p.clip) * z.to(params.device)
            grads[k] = total / min(self.batch, len(self.data.train_idx[node]))
            if len(rows):
                one = {name: b[k: k + 1] for name, b in buffers.items()}
                batch_loss, acc = self.inner.evaluate(params[k: k + 1], one, xb, yb)
                losses[k], correct[k] = float(batch_loss[0]), float(acc[0]) * len(rows)
            count[k] = len(rows)
        return StepOutput(grads, losses, correct, count, buffers)

    def evaluate(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.inner.evaluate(params, buffers, x, y)


class SampleLedger:
    """ε_i of every client from its DP-SGD steps so far; the run's ε is the largest."""

    def __init__(self, privacy: PrivacyConfig, train: TrainConfig, sizes: torch.Tensor) -> None:
        self.privacy = privacy
        self.sizes = sizes
        self.batch = sizes.clamp(max=train.batch_size)
        self.per_round = local_steps(train, sizes)  # steps of one participation
        self.steps = torch.zeros_like(sizes)
        check_target(privacy, self._worst(self.per_round))

    def _eps(self, node: int, steps: int) -> float:
        p = self.privacy
        return epsilon(p.accountant, p.sampling, p.noise_multiplier, steps, p.delta,
                       int(self.sizes[node]), int(self.batch[node]))

    def _worst(self, steps: torch.Tensor) -> float:
        """max_i ε_i(steps_i): per shard size only the client with the most steps counts."""
        best: dict[tuple[int, int], int] = {}
        for i in torch.nonzero(steps).flatten().tolist():
            key = (int(self.sizes[i]), int(self.batch[i]))
            if key not in best or int(steps[i]) > int(steps[best[key]]):
                best[key] = i
        return max((self._eps(i, int(steps[i])) for i in best.values()), default=0.0)

    def update(self, clients: torch.Tensor) -> float:
        """After a round in which ``clients`` trained: the largest ε_i so far."""
        self.steps[clients.cpu()] += self.per_round[clients.cpu()]
        return self._worst(self.steps)

    def next_epsilon(self) -> float:
        """The largest ε_i if every client took part in one more round."""
        return self._worst(self.steps + self.per_round)

    def record(self) -> dict[str, Any]:
        p = self.privacy
        eps = self._worst(self.steps)
        return {"privacy": {"level": "sample", "epsilon": eps if math.isfinite(eps) else None,
                            "delta": p.delta, "accountant": p.accountant,
                            "sampling": p.sampling, "noise_multiplier": p.noise_multiplier,
                            "clip": p.clip if math.isfinite(p.clip) else None,
                            "max_steps": int(self.steps.max()) if len(self.steps) else 0}}
