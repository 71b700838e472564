"""D-SGD and DSGDm (Lian et al. 2017, "Can decentralized algorithms outperform centralized
algorithms?"; local momentum as in Lin et al. 2021), adapt-then-combine:

    x_i ← x_i − lr·u_i,  u_i = optimizer(g_i + λx_i + wd·x_i)   (plain SGD: u_i = g_i + ...)
    x_i ← Σ_j W_ij x_j                                        (W @ x; stale copies when async)

The local optimizer is ``train.optimizer``/``train.momentum`` (``FunctionalOptimizer``) with
state kept across epochs (DSGDm). With K = ``exchange_period`` > 1 node i mixes every step with
the last copy received from each neighbour (edges refresh once per K steps); with uniform
weights (``topology.mixing: uniform``) that is reference system 001's
x_i ← (x_i − lr·g_i + Σ_j x̃_j)/(deg_i + 1). With ``exchange: two_way`` the copies x̃_j are the
neighbours' published post-mixing models and ``epoch_swap`` refreshes every copy at the end of
each node epoch (the reference's ``diff()``).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.decentralized.base import LocalOptimizerAlgorithm, SwapConfig
from fedweave.algorithms.decentralized.personal import PersonalHead, personal_head_field


class DSGDConfig(SwapConfig):
    name: Literal["dsgd"] = "dsgd"
    epoch_swap: bool = Field(
        False, description="at the end of each node epoch swap models with every live "
        "neighbour, both ways (reference system 001's diff() after its evaluation)")
    personal_head: bool = personal_head_field()
    #: ``aggregator.name`` replaces Σ_j W_ij x_j by a robust rule (fedweave.robust.peers)
    uses_aggregator: ClassVar[bool] = True


@register_algorithm("dsgd", DSGDConfig)
class DSGD(PersonalHead, LocalOptimizerAlgorithm):
    """Adapt (local optimizer step) then combine (x ← W x; the body only with
    ``personal_head``, ``decentralized.personal``)."""

    mixes = True

    def combine(self, active: torch.Tensor, due: torch.Tensor, lr: torch.Tensor,
                fresh: bool) -> None:
        with self.personal():
            self.x = self.select(active, self.mix(self.x, "x", fresh), self.x)

