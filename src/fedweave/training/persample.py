"""Per-sample outputs of a model stack (``torch.func``): losses, parameter gradients and input
gradients, one row per sample, with no Python loop over samples.

They run the model in evaluation mode (BatchNorm uses its running statistics, dropout is off),
so a sample's output never depends on the other samples of its batch. Shared by both gradient
engines through ``PerSample``; influence scoring (TracIn, EL2N, EK-FAC), DP-SGD and
DeepInversion build on them.

    sample_losses(params[M, P], x[B], y[B])        -> [M, B]      ℓ(f(x_b; θ_m), y_b)
    sample_grads(params[P], x[B], y[B], names)     -> [B, P_sel]  ∇_θ ℓ(f(x_b; θ), y_b)
    input_grads(params[P], x[B], y[B])             -> [B, ...]    ∇_x ℓ(f(x_b; θ), y_b)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from fedweave.core.population import Buffers, ParamLayout
from fedweave.training.objectives import CROSS_ENTROPY, DataLoss

CHUNK = 1024  # samples per vmapped call (bounds activation and gradient memory)


class PerSample:
    """Mixin for gradient engines with ``self.model`` and ``self.layout``."""

    model: nn.Module
    layout: ParamLayout

    def evaluate_sums(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def evaluate(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy and accuracy of each model ``params[M]`` on (x, y), on the CPU:
        the engine's ``evaluate_sums`` over the number of samples."""
        loss, correct = self.evaluate_sums(params, buffers, x, y)
        n = max(len(y), 1)
        return (loss / n).cpu(), (correct / n).cpu()

    def _one(self, p: dict[str, torch.Tensor], b: Buffers, x: torch.Tensor, y: torch.Tensor,
             i: torch.Tensor, loss: DataLoss) -> torch.Tensor:
        logits = functional_call(self.model, (p, b), (x.unsqueeze(0),))
        return loss.per_sample(logits, y.unsqueeze(0), i.unsqueeze(0))[0]

    @torch.no_grad()
    def sample_losses(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                      y: torch.Tensor, idx: torch.Tensor | None = None,
                      loss: DataLoss | None = None) -> torch.Tensor:
        """``[M, B]`` per-sample losses of each model ``params[M, P]`` (``buffers[M, ...]``)."""
        loss = loss or CROSS_ENTROPY
        idx = torch.arange(len(y), device=y.device) if idx is None else idx
        was = self.model.training
        self.model.eval()
        try:
            out = []
            for m in range(params.shape[0]):
                p = self.layout.views(params[m])
                b = {k: v[m] for k, v in buffers.items()}
                rows = []
                for s in range(0, len(y), CHUNK):
                    logits = functional_call(self.model, (p, b), (x[s: s + CHUNK],))
                    rows.append(loss.per_sample(logits, y[s: s + CHUNK], idx[s: s + CHUNK]))
                out.append(torch.cat(rows) if rows else x.new_zeros(0))
            return torch.stack(out)
        finally:
            self.model.train(was)

    def sample_grads(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                     y: torch.Tensor, names: Sequence[str] | None = None,
                     idx: torch.Tensor | None = None, loss: DataLoss | None = None
                     ) -> torch.Tensor:
        """``[B, P_sel]`` per-sample gradients of one model ``params[P]`` with respect to the
        parameters ``names`` (default all, in layout order), flattened and concatenated."""
        loss = loss or CROSS_ENTROPY
        idx = torch.arange(len(y), device=y.device) if idx is None else idx
        chosen = list(self.layout.names if names is None else names)
        unknown = set(chosen) - set(self.layout.names)
        if unknown:
            raise KeyError(f"no parameters {sorted(unknown)}; have {list(self.layout.names)}")
        views = self.layout.views(params)
        fixed = {n: v for n, v in views.items() if n not in chosen}

        def f(sel: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor,
              ib: torch.Tensor) -> torch.Tensor:
            return self._one({**fixed, **sel}, buffers, xb, yb, ib, loss)

        g = vmap(grad(f), in_dims=(None, 0, 0, 0))
        was = self.model.training
        self.model.eval()
        try:
            parts = []
            sel = {n: views[n] for n in chosen}
            for s in range(0, len(y), CHUNK):
                out = g(sel, x[s: s + CHUNK], y[s: s + CHUNK], idx[s: s + CHUNK])
                parts.append(torch.cat([out[n].flatten(1) for n in chosen], 1))
        finally:
            self.model.train(was)
        width = sum(views[n].numel() for n in chosen)
        return torch.cat(parts) if parts else params.new_zeros(0, width)

    def input_grads(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                    y: torch.Tensor, idx: torch.Tensor | None = None,
                    loss: DataLoss | None = None) -> torch.Tensor:
        """``[B, ...]`` gradient of each sample's loss with respect to its input."""
        loss = loss or CROSS_ENTROPY
        idx = torch.arange(len(y), device=y.device) if idx is None else idx
        p = self.layout.views(params)

        def f(xb: torch.Tensor, yb: torch.Tensor, ib: torch.Tensor) -> torch.Tensor:
            return self._one(p, buffers, xb, yb, ib, loss)

        was = self.model.training
        self.model.eval()
        try:
            g = vmap(grad(f))
            parts = [g(x[s: s + CHUNK], y[s: s + CHUNK], idx[s: s + CHUNK])
                     for s in range(0, len(y), CHUNK)]
        finally:
            self.model.train(was)
        return torch.cat(parts) if parts else torch.zeros_like(x)
