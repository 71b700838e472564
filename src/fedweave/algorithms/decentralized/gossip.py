"""Gossip SGD (Boyd et al. 2006 randomized gossip, pairwise averaging):

    x_i ← x_i − lr·u_i                       (local optimizer step, every step)
    every ``interval`` steps: x_i ← (x_i + x_j)/2,  j = this exchange's partner of i

Partners are round-robin: the edges are properly coloured with at most Δ+1 colours
(Misra–Gries, ``exchange_schedule`` with period Δ+1, empty colours removed); exchange c
activates colour c mod #colours, a matching,
so each node averages with at most one neighbour and cycles through all of them. The partner's
model is its CURRENT post-step model (synchronous; the seed averaged against a stale pre-step
copy, so only the last edge counted); asynchronous runs use the last copy received.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.decentralized.base import DecentralizedConfig, LocalOptimizerAlgorithm
from fedweave.algorithms.decentralized.personal import PersonalHead, personal_head_field
from fedweave.topology import exchange_schedule


class GossipConfig(DecentralizedConfig):
    name: Literal["gossip"] = "gossip"
    interval: int = Field(1, ge=1, description="steps between two pairwise averagings")
    personal_head: bool = personal_head_field()


@register_algorithm("gossip", GossipConfig)
class Gossip(PersonalHead, LocalOptimizerAlgorithm):
    """Local steps; pairwise averaging over a round-robin matching (of the body only with
    ``personal_head``, ``decentralized.personal``)."""

    config: GossipConfig

    def schedule_offsets(self) -> torch.Tensor:
        deg = max((d for _, d in self.graph.degree), default=0)
        offsets = exchange_schedule(self.edges, self.n, deg + 1)
        used, offsets = torch.unique(offsets, return_inverse=True)  # drop empty colours
        self.colours = max(len(used), 1)
        return offsets

    def due(self, k: torch.Tensor) -> torch.Tensor:
        ko = k[self.slot_own]
        iv = self.config.interval
        return ((ko + 1) % iv == 0) & ((ko // iv) % self.colours == self.offset)

    def combine(self, active: torch.Tensor, due: torch.Tensor, lr: torch.Tensor,
                fresh: bool) -> None:
        slots = torch.nonzero(due).flatten()  # a matching: one slot per node at most
        if len(slots):
            own = self.own[slots]
            with self.personal():
                self.x = self.x.index_copy(0, own, (self.x[own] + self.copies["x"][slots]) / 2)

