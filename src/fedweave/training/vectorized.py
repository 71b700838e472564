"""The vectorized gradient engine: a whole cohort as one stacked model.

For node models ``params[K, P]`` and one batch per node ``idx[K, B]`` it computes the K
minibatch gradients, ``chunk`` rows per call (``training.chunks``: fixed-width chunks keep every
row's numbers independent of how rows are batched and split across processes), of

    g_k = ∇_θ [ Σ_b w_kb · ℓ(f(x_kb; θ_k), y_kb) / max(Σ_b w_kb, 1) ]   (k = 1..K)

(ℓ: the objective's data term, cross-entropy by default) with
``torch.func.vmap(torch.func.grad(loss))`` over ``torch.func.functional_call`` of the
template model (vmap turns conv/linear layers over a stack of weights into grouped/batched
kernels). Padded samples have weight 0 (the loop engine slices them away; the mean over the
real samples is the same), inactive rows get zero gradients and unchanged buffers. The batch of
the whole cohort is one gather ``data.gather(idx[K, B])``; with augmentation on, batches are
gathered per node with the loop engine's key ``(*key, node)`` so both engines see the same
images. Dropout draws independent masks per node (``randomness="different"``) from the global
generator seeded per chunk with (seed, "dropout", *key, first node of the chunk); the masks
differ from the loop engine's (which seeds per node), so runs with dropout agree with the loop
engine only in distribution (and exactly across process counts).

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
from fedweave.rng import derive_seed, seed_dropout
from fedweave.training.chunks import chunks, pad_rows
from fedweave.training.objectives import CROSS_ENTROPY, DataLoss
from fedweave.training.persample import PerSample
from fedweave.training.protocol import StepOutput


class VectorizedEngine(PerSample):
    """``vmap(grad)`` over the node stack; same protocol and semantics as ``LoopEngine``."""

    name = "vectorized"
    calibration: dict[str, Any] | None = None  # how the engine was chosen (engine.name)

    def __init__(self, model: nn.Module, layout: ParamLayout, data: FederatedData,
                 seed: int, eval_batch: int = 2048,
                 chunk: int = 8) -> None:
        self.model, self.layout, self.data, self.seed = model, layout, data, seed
        self.chunk = chunk
        self.eval_batch = eval_batch
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
        """Gradients of the rows in chunks of exactly ``chunk`` rows (``training.chunks``);
        chunks without an active row are skipped, inactive rows get zeros."""
        grad_fn = self._grad_fn(loss or CROSS_ENTROPY)
        k_count, c = params.shape[0], self.chunk
        count = weight.sum(1).to(params.dtype)
        grads = torch.zeros_like(params)
        loss_all = torch.zeros(k_count, dtype=params.dtype, device=params.device)
        correct_all = torch.zeros_like(loss_all)
        # On CPU skip finished chunks (a cheap host check); on an accelerator compute every
        # chunk and mask, so the step never waits for the host.
        check = params.device.type == "cpu"
        self.model.train()
        for sl in chunks(k_count, c):
            act = active[sl]
            if check and not bool(act.any()):
                continue
            n = sl.stop - sl.start
            w_c = pad_rows(weight[sl], c, 0.0)
            idx_c, nodes_c = pad_rows(idx[sl], c), pad_rows(nodes[sl], c)
            b_c = {name: pad_rows(b[sl], c) for name, b in buffers.items()}
            xb, yb = self._gather(idx_c, w_c, key, nodes_c)
            if self.has_dropout:  # per chunk, keyed by its first node: any process, any stack
                seed_dropout(derive_seed(self.seed, "dropout", *key, int(nodes_c[0])),
                             params.device)
            g, (loss_k, correct) = grad_fn(self.layout.views(pad_rows(params[sl], c)), b_c,
                                           xb, yb, idx_c, w_c.to(params.dtype))
            a = act.to(params.dtype)
            out = grads[sl]
            torch.cat([g[name][:n].reshape(n, -1) for name in self.layout.names], dim=1,
                      out=out)
            if not bool(act.all()):
                out.mul_(a[:, None])  # inactive rows: zero gradient
            loss_all[sl] = loss_k[:n].to(params.dtype) * a
            correct_all[sl] = correct[:n].to(params.dtype) * a
        return StepOutput(grads, loss_all, correct_all, count, buffers)

    @torch.no_grad()
    def evaluate_sums(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ cross-entropy and Σ correct (float64, per model) over (x, y), added batch by batch
        in order: one model alone, several in chunks of exactly ``chunk`` models vmapped."""
        self.model.eval()
        m = params.shape[0]
        loss = torch.zeros(m, dtype=torch.float64, device=params.device)
        correct = torch.zeros(m, dtype=torch.float64, device=params.device)
        c = 1 if m == 1 else self.chunk
        batch = min(self.eval_batch, max(len(y), 1))
        for start in range(0, len(y), batch):
            xb = self.data.features(x[start: start + batch])
            yb = y[start: start + batch]
            for sl in chunks(m, c):
                n = sl.stop - sl.start
                if c == 1:
                    logits = self._logits_one(self.layout.views(params[sl.start]),
                                              {k: v[sl.start] for k, v in buffers.items()},
                                              xb).unsqueeze(0)
                else:
                    p = self.layout.views(pad_rows(params[sl], c))
                    b = {k: pad_rows(v[sl], c) for k, v in buffers.items()}
                    logits = self._logits(p, b, xb)[:n]  # [n, B, C]
                ce = F.cross_entropy(logits.flatten(0, 1), yb.repeat(n),
                                     reduction="none").view(n, -1)
                loss[sl] += ce.sum(1).to(torch.float64)
                correct[sl] += (logits.argmax(-1) == yb).sum(1).to(torch.float64)
        self.model.train()
        return loss, correct
