"""PDMM-ISVR and ADMM-ISVR: edge-consensus learning with implicit stochastic variance
reduction (Niwa et al., ICML 2021, "ECL-ISVR").

K = ``exchange_period`` (each edge swaps once per K steps at its offset), E_i = live edges of
i, A_{i|j} = +1 if i < j else −1, piw ∈ (0, 2]:

    η_i = piw / (lr·(K·E_i + K − piw·E_i))
    p_i ← (p_i/lr − c_i·g_i + η_i Σ_j A_{i|j} z_{i|j}) / (1/lr + η_i E_i)
          c_i = 1, or with ``use_gcoef`` c_i = 1 − lr·η_i·E_i·(K/piw − 1)
    on a due edge i sends y_{i|j} = z_{i|j} − 2 A_{i|j} p_i, and j sets
      PDMM-ISVR:  z_{j|i} ← y_{i|j}          ADMM-ISVR:  z_{j|i} ← ½ z_{j|i} + ½ y_{i|j}

Duals start at zero. The variant is the algorithm name (``pdmm_isvr`` / ``admm_isvr``), never
inferred from piw (the seed code only ran ADMM when piw = 2 and crashed on PDMM with piw = 2).
η must be positive: K·E_i + K > piw·E_i; piw = 2 needs K ≥ 2 (checked up front).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.decentralized.base import SwapConfig
from fedweave.algorithms.decentralized.duals import EdgeDuals
from fedweave.config import AlgorithmConfig
from fedweave.context import RunContext
from fedweave.errors import UserError


class PdmmISVRConfig(SwapConfig):
    name: Literal["pdmm_isvr"] = "pdmm_isvr"
    piw: float = Field(1.0, gt=0, le=2, description="penalty weight piw ∈ (0, 2] of the dual "
                       "step η_i = piw / (lr·(K·E_i + K − piw·E_i)); reference system 001 used "
                       "0.5, 1 or 2 (2 needs exchange_period ≥ 2)")
    use_gcoef: bool = Field(False, description="scale the gradient by c = 1 − lr·η·E·(K/piw − 1)")


class AdmmISVRConfig(PdmmISVRConfig):
    name: Literal["admm_isvr"] = "admm_isvr"  # type: ignore[assignment]


class ISVR(EdgeDuals):
    config: PdmmISVRConfig
    message_keys = ("y",)

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        c = self.config
        k = c.exchange_period
        deg = torch.tensor([d for _, d in sorted(self.graph.degree)])  # all N, held or not
        bad = (deg > 0) & (k * deg + k - c.piw * deg <= 0)
        if bool(bad.any()):
            raise UserError(
                f"algorithm.piw={c.piw} with algorithm.exchange_period={k}: the ISVR penalty "
                f"η = piw/(lr·(K·E + K − piw·E)) is not positive for degree "
                f"{int(deg[bad].max())}; use exchange_period ≥ 2 or a smaller piw")

    def init_state(self) -> None:
        self.z = torch.zeros(len(self.own), self.x.shape[1], dtype=self.x.dtype,
                             device=self.x.device)

    def local_update(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        c = self.config
        k = float(c.exchange_period)
        lr = torch.where(lr > 0, lr, 1.0)
        e = self.degree
        has = e > 0
        eta = torch.where(has, c.piw / (lr * (k * e + k - c.piw * e)).clamp(min=1e-30), 0.0)
        coef = 1.0 - lr * eta * e * (k / c.piw - 1.0) if c.use_gcoef else torch.ones_like(e)
        az = self.neighbour_sum(self.sign * self.z)
        new = (self.x / lr - coef * g + eta * az) / (1.0 / lr + eta * e)
        self.x = self.select(active, new, self.x)

    def message(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"y": self.dual_message(slots)}

    def receive(self, slots: torch.Tensor, msg: dict[str, torch.Tensor]) -> None:
        self.receive_dual(slots, msg["y"])


@register_algorithm("pdmm_isvr", PdmmISVRConfig)
class PdmmISVR(ISVR):
    """PDMM-ISVR: the received dual replaces z."""


@register_algorithm("admm_isvr", AdmmISVRConfig)
class AdmmISVR(ISVR):
    """ADMM-ISVR: z ← ½z + ½y."""

    averaged = True
