"""Gradients a scorer needs from one model ``θ`` (flat ``[P]``), in evaluation mode (BatchNorm
uses running statistics, dropout is off, so a sample's loss never depends on its batch), with
no Python loop over samples (``torch.func``; chunks of ``CHUNK`` samples bound the memory):

    mean_grad(θ, x, y)        = ∇_θ (1/n) Σ_b ℓ(f(x_b; θ), y_b)               [P]
    sample_dots(θ, x, y, u)   = ⟨∇_θ ℓ(f(x_b; θ), y_b), u⟩  for every b         [B]  (one JVP)
    hvp(θ, x, y, u)           = ∇²_θ (1/n) Σ_b ℓ_b · u                          [P]
    losses(θ, x, y)           = ℓ(f(x_b; θ), y_b)                               [B]
    logits(θ, x)              = f(x_b; θ)                                       [B, C]

``sample_dots`` is the forward-mode derivative of the per-sample loss vector along ``u``, so
TracIn's and DICE's inner products with every training sample cost about two forward passes
instead of a per-sample gradient matrix ``[B, P]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vmap

from fedweave.core.population import Buffers, ParamLayout

CHUNK = 1024


class Probe:
    """One architecture (``model`` is a template: its own parameters are never used)."""

    def __init__(self, model: nn.Module, layout: ParamLayout) -> None:
        self.model, self.layout = model, layout

    def _logits(self, p: dict[str, torch.Tensor], b: Buffers, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = functional_call(self.model, (p, b), (x,))
        return out

    def _eval(self) -> bool:
        was = self.model.training
        self.model.eval()
        return was

    def logits(self, theta: torch.Tensor, buffers: Buffers, x: torch.Tensor) -> torch.Tensor:
        was = self._eval()
        try:
            with torch.no_grad():
                p = self.layout.views(theta)
                return torch.cat([self._logits(p, buffers, x[s: s + CHUNK])
                                  for s in range(0, len(x), CHUNK)])
        finally:
            self.model.train(was)

    def losses(self, theta: torch.Tensor, buffers: Buffers, x: torch.Tensor,
               y: torch.Tensor) -> torch.Tensor:
        was = self._eval()
        try:
            with torch.no_grad():
                p = self.layout.views(theta)
                parts = [F.cross_entropy(self._logits(p, buffers, x[s: s + CHUNK]),
                                         y[s: s + CHUNK], reduction="none")
                         for s in range(0, len(y), CHUNK)]
            return torch.cat(parts) if parts else theta.new_zeros(0)
        finally:
            self.model.train(was)

    def mean_grad(self, theta: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                  y: torch.Tensor) -> torch.Tensor:
        """∇ of the mean loss over all of (x, y) (summed chunk by chunk)."""
        def total(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
                  ) -> torch.Tensor:
            return F.cross_entropy(self._logits(p, buffers, xb), yb, reduction="sum")

        was = self._eval()
        try:
            g = torch.zeros_like(theta)
            views = self.layout.views(theta.detach())
            for s in range(0, len(y), CHUNK):
                out = grad(total)(views, x[s: s + CHUNK], y[s: s + CHUNK])
                g += self.layout.flatten(out, lead=0)
            return g / max(len(y), 1)
        finally:
            self.model.train(was)

    def sample_dots(self, theta: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                    y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``[B]``: ⟨∇ℓ_b(θ), u⟩ for every sample (forward-mode along ``u``)."""
        def per_sample(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
                       ) -> torch.Tensor:
            return F.cross_entropy(self._logits(p, buffers, xb), yb, reduction="none")

        was = self._eval()
        try:
            views = self.layout.views(theta.detach())
            tangent = self.layout.views(u.detach().to(theta.dtype))
            parts = []
            for s in range(0, len(y), CHUNK):
                xb, yb = x[s: s + CHUNK], y[s: s + CHUNK]
                d = jvp(lambda p, xb=xb, yb=yb: per_sample(p, xb, yb), (views,), (tangent,))[1]
                parts.append(d.detach())
            return torch.cat(parts) if parts else theta.new_zeros(0)
        finally:
            self.model.train(was)

    def stacked_grads(self, thetas: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                      y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``[M, P]``: ∇ of model m's weighted mean loss Σ_b w_mb ℓ_mb / Σ_b w_mb over its own
        rows ``x[m]``, ``y[m]`` (padding has weight 0), all models in one vmapped call."""
        def mean(p: dict[str, torch.Tensor], b: Buffers, xb: torch.Tensor, yb: torch.Tensor,
                 wb: torch.Tensor) -> torch.Tensor:
            loss = F.cross_entropy(self._logits(p, b, xb), yb, reduction="none")
            return (loss * wb).sum() / wb.sum().clamp(min=1)

        was = self._eval()
        try:
            out = vmap(grad(mean))(self.layout.views(thetas.detach()), buffers, x, y, w)
            return self.layout.flatten(out, lead=1)
        finally:
            self.model.train(was)

    def stacked_dots(self, thetas: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                     y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """``[M, B]``: ⟨∇ℓ(x[m, b]; θ_m), u_m⟩ for every model m and its rows (one vmapped JVP)."""
        def per_sample(p: dict[str, torch.Tensor], b: Buffers, xb: torch.Tensor,
                       yb: torch.Tensor, t: dict[str, torch.Tensor]) -> torch.Tensor:
            def f(q: dict[str, torch.Tensor]) -> torch.Tensor:
                return F.cross_entropy(self._logits(q, b, xb), yb, reduction="none")
            return jvp(f, (p,), (t,))[1]

        was = self._eval()
        try:
            views = self.layout.views(thetas.detach())
            tangent = self.layout.views(u.detach().to(thetas.dtype))
            return vmap(per_sample)(views, buffers, x, y, tangent).detach()
        finally:
            self.model.train(was)

    def hvp(self, theta: torch.Tensor, buffers: Buffers, x: torch.Tensor, y: torch.Tensor,
            u: torch.Tensor) -> torch.Tensor:
        """Hessian of the mean loss over (x, y) times ``u`` (forward-over-reverse)."""
        def total(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
                  ) -> torch.Tensor:
            return F.cross_entropy(self._logits(p, buffers, xb), yb, reduction="sum")

        was = self._eval()
        try:
            views = self.layout.views(theta.detach())
            tangent = self.layout.views(u.detach().to(theta.dtype))
            out = torch.zeros_like(theta)
            for s in range(0, len(y), CHUNK):
                xb, yb = x[s: s + CHUNK], y[s: s + CHUNK]
                h = jvp(lambda p, xb=xb, yb=yb: grad(total)(p, xb, yb), (views,), (tangent,))[1]
                out += self.layout.flatten(h, lead=0)
            return out / max(len(y), 1)
        finally:
            self.model.train(was)
