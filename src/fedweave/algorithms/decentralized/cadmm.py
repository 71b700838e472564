"""CADMM / DiNNO (Yu et al. 2022, "DiNNO: distributed neural network optimization for
multi-robot collaborative learning"). A communication round every B steps:

    exchange θ with every neighbour;  ρ ← ρ·scaling;
    p_i ← p_i + ρ Σ_j (θ_i − θ_j);    anchor_i ← θ_i
    B inner optimizer steps (``train.optimizer``) on
      f_i(θ) + p_iᵀθ + ρ Σ_j ‖θ − (anchor_i + θ_j)/2‖²,
      gradient g_i + p_i + 2ρ Σ_j (θ − (anchor_i + θ_j)/2)

B = ``inner_steps``; all edges exchange together (there is no ``exchange_period``). θ_j is the
last model received from j (stale when asynchronous).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.decentralized.base import DecentralizedConfig, LocalOptimizerAlgorithm


class CADMMConfig(DecentralizedConfig):
    name: Literal["cadmm"] = "cadmm"
    inner_steps: int = Field(5, ge=1, description="B: primal steps per communication round")
    rho: float = Field(0.1, ge=0, description="initial penalty ρ")
    rho_scaling: float = Field(1.0, gt=0, description="ρ ← ρ·scaling every round")


@register_algorithm("cadmm", CADMMConfig)
class CADMM(LocalOptimizerAlgorithm):
    config: CADMMConfig

    def due(self, k: torch.Tensor) -> torch.Tensor:
        return (k[self.slot_own] + 1) % self.config.inner_steps == 0

    def init_state(self) -> None:
        super().init_state()
        self.p = torch.zeros_like(self.x)
        self.anchor = self.x.clone()
        self.rho = torch.full((self.rows, 1), self.config.rho, dtype=self.x.dtype,
                              device=self.x.device)

    def local_update(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        pull = self.degree * (self.x - 0.5 * self.anchor) - 0.5 * self.neighbour_sum(
            self.copies["x"])
        g_aug = g + self.p + 2 * self.rho * pull
        self.sgd_step(active, g_aug, lr)

    def combine(self, active: torch.Tensor, due: torch.Tensor, lr: torch.Tensor,
                fresh: bool) -> None:
        slots = torch.nonzero(due).flatten()
        if len(slots) == 0:
            return
        rows = torch.zeros(self.rows, dtype=torch.bool, device=self.x.device)
        rows[self.own[slots]] = True
        r = rows.view(-1, 1)
        self.rho = torch.where(r, self.rho * self.config.rho_scaling, self.rho)
        diff = self.degree * self.x - self.neighbour_sum(self.copies["x"])
        self.p = torch.where(r, self.p + self.rho * diff, self.p)
        self.anchor = torch.where(r, self.x, self.anchor)

    def algorithm_state(self) -> dict[str, torch.Tensor]:
        return {"p": self.p, "anchor": self.anchor, "rho": self.rho,
                **super().algorithm_state()}

    def load_algorithm_state(self, state: dict[str, torch.Tensor]) -> None:
        self.p, self.anchor, self.rho = state["p"], state["anchor"], state["rho"]
        super().load_algorithm_state(state)
