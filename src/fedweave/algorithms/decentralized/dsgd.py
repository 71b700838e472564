"""D-SGD and DSGDm (Lian et al. 2017, "Can decentralized algorithms outperform centralized
algorithms?"; local momentum as in Lin et al. 2021), adapt-then-combine (REFERENCE §3):

    x_i ← x_i − lr·u_i,  u_i = optimizer(g_i + λx_i + wd·x_i)   (plain SGD: u_i = g_i + ...)
    x_i ← Σ_j W_ij x_j                                        (W @ x; stale copies when async)

The local optimizer is ``train.optimizer``/``train.momentum`` (``FunctionalOptimizer``) with
state kept across epochs (DSGDm). With K = ``exchange_period`` > 1 node i mixes every step with
the last copy received from each neighbour (edges refresh once per K steps).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.decentralized.base import LocalOptimizerAlgorithm, PeriodicConfig


class DSGDConfig(PeriodicConfig):
    name: Literal["dsgd"] = "dsgd"
    #: ``aggregator.name`` replaces Σ_j W_ij x_j by a robust rule (fedweave.robust.peers)
    uses_aggregator: ClassVar[bool] = True


@register_algorithm("dsgd", DSGDConfig)
class DSGD(LocalOptimizerAlgorithm):
    """Adapt (local optimizer step) then combine (x ← W x)."""

    mixes = True

    def combine(self, active: torch.Tensor, due: torch.Tensor, lr: torch.Tensor,
                fresh: bool) -> None:
        self.x = self.select(active, self.mix(self.x, "x", fresh), self.x)

