"""ADMM-SGD and PDMM-SGD: edge-consensus learning (Niwa et al., KDD 2020).

Per directed edge i|j: A_{i|j} = +1 if i < j else −1, dual z_{i|j} (starts as a copy of the
initial weights), x̃_j the last model received from j, |E_i| the live edges of i and
s = sqrt(fan-in) of each parameter's layer (``ParamLayout.fan_in``). Each step:

    w_i ← [μ w_i − g_i + Σ_j (s η/|E_i|) A_{i|j} z_{i|j} + Σ_j (s ρ/|E_i|) x̃_j]
          / [μ + s(η + ρ)]
    on a due edge i sends y_{i|j} = z_{i|j} − 2 A_{i|j} w_i and w_i to j, and j sets
      PDMM (Peaceman–Rachford):  z_{j|i} ← y_{i|j}
      ADMM (Douglas–Rachford):   z_{j|i} ← ½ z_{j|i} + ½ y_{i|j}

μ defaults to 1/lr (200 for lr 0.002), η = 1, ρ = 0.1. Sums over j are ``index_add`` over the
directed-edge list.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.decentralized.base import SwapConfig
from fedweave.algorithms.decentralized.duals import EdgeDuals


class EdgeConsensusConfig(SwapConfig):
    name: Literal["pdmm_sgd"] = "pdmm_sgd"
    mu: float | None = Field(None, gt=0, description="proximal weight μ (default 1/lr)")
    eta: float = Field(1.0, ge=0, description="dual weight η")
    rho: float = Field(0.1, ge=0, description="weight ρ of the received neighbour models")


class AdmmSGDConfig(EdgeConsensusConfig):
    name: Literal["admm_sgd"] = "admm_sgd"  # type: ignore[assignment]


class EdgeConsensus(EdgeDuals):
    """Shared primal/dual update; ``averaged`` selects ADMM's dual averaging."""

    config: EdgeConsensusConfig
    message_keys = ("y", "x")

    def init_state(self) -> None:
        self.scale = self.ctx.layout.fan_in().sqrt().to(self.x.device, self.x.dtype)
        self.z = self.x[self.own].clone()
        self.new_copies("x", self.ctx.init_params)

    def local_update(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        c = self.config
        mu = 1.0 / torch.where(lr > 0, lr, 1.0) if c.mu is None else torch.full_like(lr, c.mu)
        has = (self.degree > 0).to(self.x.dtype)
        per_edge = has / self.degree.clamp(min=1)
        s = self.scale.view(1, -1)
        az = self.neighbour_sum(self.sign * self.z)
        xt = self.neighbour_sum(self.copies["x"])
        num = mu * self.x - g + s * per_edge * (c.eta * az + c.rho * xt)
        den = mu + s * has * (c.eta + c.rho)
        self.x = self.select(active, num / den, self.x)

    def message(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": self.dual_message(slots), "x": self.x[self.own[slots]]}

    def receive(self, slots: torch.Tensor, msg: dict[str, torch.Tensor]) -> None:
        self.copies["x"][slots] = msg["x"]
        self.receive_dual(slots, msg["y"])


@register_algorithm("pdmm_sgd", EdgeConsensusConfig)
class PdmmSGD(EdgeConsensus):
    """PDMM-SGD: the received dual replaces z (Peaceman–Rachford splitting)."""


@register_algorithm("admm_sgd", AdmmSGDConfig)
class AdmmSGD(EdgeConsensus):
    """ADMM-SGD: z ← ½z + ½y (Douglas–Rachford splitting)."""

    averaged = True
