"""The loop gradient engine: plain autograd, one node model at a time. Works for every model
(BatchNorm included); ``training.vectorized`` batches the same computation with ``vmap``."""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedweave.core.population import Buffers, ParamLayout, load_flat
from fedweave.data.federated import FederatedData
from fedweave.models import has_dropout
from fedweave.rng import derive_seed, seed_dropout
from fedweave.training.objectives import CROSS_ENTROPY, DataLoss
from fedweave.training.persample import PerSample
from fedweave.training.protocol import StepOutput
from fedweave.training.workers import run_all, workers


class LoopEngine(PerSample):
    """Plain autograd, one node model at a time (the nodes of a step spread over the idle
    cores, one copy of the model each: ``fedweave.training.workers``)."""

    name = "loop"
    calibration: dict[str, Any] | None = None  # how the engine was chosen (engine.name)

    def __init__(self, model: nn.Module, layout: ParamLayout, data: FederatedData,
                 seed: int, eval_batch: int = 2048) -> None:
        self.model, self.layout, self.data, self.seed = model, layout, data, seed
        self.eval_batch = eval_batch
        self.has_dropout = has_dropout(model)
        self._copies: list[nn.Module] = []

    def _models(self) -> list[nn.Module]:
        """One model per worker (the first is ``self.model``); one alone with dropout, whose
        masks come from torch's global generator, and with hooks (an algorithm's tap on a
        layer, e.g. MOON's representation), whose state the copies would share."""
        hooked = any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
                     for m in self.model.modules())
        count = 1 if self.has_dropout or hooked else workers()
        while len(self._copies) < count - 1:
            self._copies.append(copy.deepcopy(self.model))
        return [self.model, *self._copies[:count - 1]]

    def _load(self, params: torch.Tensor, buffers: Buffers, k: int,
              model: nn.Module | None = None) -> None:
        model = self.model if model is None else model
        load_flat(model, params[k])
        for name, buf in model.named_buffers():
            buf.copy_(buffers[name][k])

    def grads(self, params: torch.Tensor, buffers: Buffers, idx: torch.Tensor,
              weight: torch.Tensor, active: torch.Tensor, key: tuple[int, ...],
              nodes: torch.Tensor, loss: DataLoss | None = None) -> StepOutput:
        data_loss = loss or CROSS_ENTROPY
        k_count = params.shape[0]
        grads = torch.zeros_like(params)
        losses = torch.zeros(k_count, dtype=params.dtype, device=params.device)
        correct = torch.zeros_like(losses)
        count = weight.sum(1).to(params.dtype)
        buffers = {n: b.clone() for n, b in buffers.items()}
        models = self._models()
        todo = torch.nonzero(active).flatten().tolist()
        share = -(-len(todo) // len(models))  # contiguous runs of nodes, one per model

        def run(w: int) -> None:
            model = models[w]
            model.train()
            plist = list(model.parameters())
            for k in todo[w * share:(w + 1) * share]:
                node = int(nodes[k])
                self._load(params, buffers, k, model)
                real = weight[k] > 0
                rows = idx[k][real]
                xb, yb = self.data.gather(rows, augment_key=(*key, node))
                if self.has_dropout:
                    seed_dropout(derive_seed(self.seed, "dropout", *key, node), params.device)
                logits = model(xb)
                batch_loss = data_loss.mean(logits, yb, rows)
                g = torch.autograd.grad(batch_loss, plist)
                grads[k] = torch.cat([t.reshape(-1) for t in g])
                losses[k] = batch_loss.detach()
                correct[k] = (logits.argmax(1) == yb).sum()
                for name, buf in model.named_buffers():
                    buffers[name][k] = buf

        run_all(run, range(min(len(models), max(1, len(todo)))))
        return StepOutput(grads, losses, correct, count, buffers)

    @torch.no_grad()
    def evaluate_sums(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ cross-entropy and Σ correct (float64) per model, batch by batch in order."""
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
        return loss, correct
