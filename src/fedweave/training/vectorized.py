"""The vectorized gradient engine: a whole cohort as one stacked model (DESIGN §3 Local training).

For node models ``params[K, P]`` and one batch per node ``idx[K, B]`` it computes all K
minibatch gradients in one call of

    g_k = ∇_θ [ Σ_b w_kb · ℓ(f(x_kb; θ_k), y_kb) / max(Σ_b w_kb, 1) ]   (k = 1..K)

(ℓ: the objective's data term, cross-entropy by default) with
``torch.func.vmap(torch.func.grad(loss))`` over ``torch.func.functional_call`` of the
template model (vmap turns conv/linear layers over a stack of weights into grouped/batched
kernels). Padded samples have weight 0 (the loop engine slices them away; the mean over the
real samples is the same), inactive rows get zero gradients and unchanged buffers. The batch of
the whole cohort is one gather ``data.gather(idx[K, B])``; with augmentation on, batches are
gathered per node with the loop engine's key ``(*key, node)`` so both engines see the same
images. Dropout draws independent masks per node (``randomness="different"``) from the global
generator seeded with (seed, "dropout", *key); the masks differ from the loop engine's (which
seeds per node), so runs with dropout agree only in distribution.

Models that vmap cannot run (BatchNorm in training mode: its running-stat update is an in-place
buffer write) use the loop engine instead; ``make_gradient_engine`` does that switch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from fedweave.core.population import Buffers, ParamLayout
from fedweave.data.federated import FederatedData
from fedweave.models import has_dropout
from fedweave.rng import derive_seed
from fedweave.training.objectives import CROSS_ENTROPY, DataLoss
from fedweave.training.persample import PerSample
from fedweave.training.protocol import StepOutput

# Samples per vmapped evaluation call (models × batch): bounds activation memory.
EVAL_SAMPLES = 8192


class VectorizedEngine(PerSample):
    """``vmap(grad)`` over the node stack; same protocol and semantics as ``LoopEngine``."""

    name = "vectorized"
    calibration: dict[str, Any] | None = None  # how the engine was chosen (engine.backend)

    def __init__(self, model: nn.Module, layout: ParamLayout, data: FederatedData,
                 seed: int, eval_batch: int = 2048, eval_samples: int = EVAL_SAMPLES) -> None:
        self.model, self.layout, self.data, self.seed = model, layout, data, seed
        self.eval_batch, self.eval_samples = eval_batch, eval_samples
        self.has_dropout = has_dropout(model)
        self.buffer_names = tuple(n for n, _ in model.named_buffers())
        self._grads: dict[int, tuple[DataLoss, Callable[..., Any]]] = {}

        def logits_fn(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                      x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (p, b), (x,))

        self._logits = vmap(logits_fn, in_dims=(0, 0, None))
        self._logits_one = logits_fn

    def _grad_fn(self, data_loss: DataLoss) -> Callable[..., Any]:
        """``vmap(grad(loss))`` for a data term (built once per term object)."""
        hit = self._grads.get(id(data_loss))
        if hit is not None and hit[0] is data_loss:
            return hit[1]
        model = self.model

        def loss_fn(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, i: torch.Tensor, w: torch.Tensor
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
            logits = functional_call(model, (p, b), (x,))
            loss = data_loss.weighted_mean(logits, y, i, w)
            correct = ((logits.argmax(1) == y).to(w.dtype) * w).sum()
            return loss, (loss.detach(), correct)

        fn = vmap(grad(loss_fn, has_aux=True), randomness="different")
        if len(self._grads) >= 8:  # a few data terms per run; never grow without bound
            self._grads.pop(next(iter(self._grads)))
        self._grads[id(data_loss)] = (data_loss, fn)
        return fn

    # ------------------------------------------------------------------ batches
    def _gather(self, idx: torch.Tensor, weight: torch.Tensor, key: tuple[int, ...],
                nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x[K, B, ...]``, ``y[K, B]``: one gather, or per node when augmenting (the loop
        engine's augmentation draws depend on the node's real batch, so we reproduce it)."""
        data = self.data
        if not (data.augment and data.x.dim() == 4):
            return data.gather(idx)
        xs, ys = data.gather(idx)  # un-augmented padding rows (weight 0) keep their shape
        real = (weight > 0).sum(1).tolist()
        for k, node in enumerate(nodes.tolist()):
            n = int(real[k])
            if n:
                rows = torch.nonzero(weight[k] > 0).flatten()
                xa, _ = data.gather(idx[k][rows], augment_key=(*key, node))
                xs[k, rows] = xa
        return xs, ys

    # ------------------------------------------------------------------ protocol
    def grads(self, params: torch.Tensor, buffers: Buffers, idx: torch.Tensor,
              weight: torch.Tensor, active: torch.Tensor, key: tuple[int, ...],
              nodes: torch.Tensor, loss: DataLoss | None = None) -> StepOutput:
        grad_fn = self._grad_fn(loss or CROSS_ENTROPY)
        k_count = params.shape[0]
        count = weight.sum(1).to(params.dtype)
        # On CPU, skip finished nodes (a cheap host check); on an accelerator compute every row
        # and mask, so the step never waits for the host.
        rows: torch.Tensor | None = None
        if params.device.type == "cpu" and not bool(active.all()):
            rows = torch.nonzero(active).flatten()
            if len(rows) == 0:
                zero = torch.zeros(k_count, dtype=params.dtype, device=params.device)
                return StepOutput(torch.zeros_like(params), zero, zero.clone(), count, buffers)
            p_in, w_in = params[rows], weight[rows]
            idx_in, nodes_in = idx[rows], nodes[rows]
            b_in = {n: b[rows] for n, b in buffers.items()}
        else:
            p_in, w_in, idx_in, nodes_in, b_in = params, weight, idx, nodes, buffers
        xb, yb = self._gather(idx_in, w_in, key, nodes_in)
        if self.has_dropout:
            torch.manual_seed(derive_seed(self.seed, "dropout", *key))
        self.model.train()
        g, (loss_k, correct) = grad_fn(self.layout.views(p_in), b_in, xb, yb, idx_in,
                                       w_in.to(p_in.dtype))
        flat = torch.cat([g[n].reshape(g[n].shape[0], -1) for n in self.layout.names], dim=1)
        if rows is not None:
            grads = torch.zeros_like(params).index_copy_(0, rows, flat)
            loss_all = torch.zeros(k_count, dtype=params.dtype, device=params.device)
            correct_all = torch.zeros_like(loss_all)
            loss_all.index_copy_(0, rows, loss_k.to(params.dtype))
            correct_all.index_copy_(0, rows, correct.to(params.dtype))
            return StepOutput(grads, loss_all, correct_all, count, buffers)
        if rows is None and params.device.type == "cpu":  # CPU, every row active
            return StepOutput(flat, loss_k, correct, count, buffers)
        act = active.to(params.dtype)
        grads = flat * act[:, None]  # inactive rows: zero gradient (their weights are 0 too)
        return StepOutput(grads, loss_k * act, correct * act, count, buffers)

    @torch.no_grad()
    def evaluate(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy and accuracy of each model ``params[M]`` on (x, y): models in
        chunks of ``eval_samples // eval_batch`` vmapped together, sums kept on the device."""
        self.model.eval()
        m = params.shape[0]
        loss = torch.zeros(m, dtype=torch.float64, device=params.device)
        correct = torch.zeros(m, dtype=torch.float64, device=params.device)
        batch = min(self.eval_batch, max(len(y), 1))
        chunk = max(1, self.eval_samples // batch)
        for start in range(0, len(y), batch):
            xb = self.data.features(x[start: start + batch])
            yb = y[start: start + batch]
            for m0 in range(0, m, chunk):
                sl = slice(m0, min(m, m0 + chunk))
                if sl.stop - sl.start == 1:
                    p = self.layout.views(params[m0])
                    b = {n: v[m0] for n, v in buffers.items()}
                    logits = self._logits_one(p, b, xb).unsqueeze(0)
                else:
                    p = self.layout.views(params[sl])
                    b = {n: v[sl] for n, v in buffers.items()}
                    logits = self._logits(p, b, xb)  # [m, B, C]
                ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(logits.shape[0]),
                                     reduction="none").view(logits.shape[0], -1)
                loss[sl] += ce.sum(1).to(torch.float64)
                correct[sl] += (logits.argmax(-1) == yb).sum(1).to(torch.float64)
        n = max(len(y), 1)
        self.model.train()
        return (loss / n).cpu(), (correct / n).cpu()
