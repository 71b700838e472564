"""The edge-dual exchange shared by the PDMM/ADMM families (Niwa et al. 2020, 2021):
per directed slot i|j a dual z_{i|j}, A_{i|j} = +1 if i < j else −1.

    node i sends  y_{i|j} = z_{i|j} − 2 A_{i|j} w_i
    node j sets   PDMM (Peaceman–Rachford):  z_{j|i} ← y_{i|j}
                  ADMM (Douglas–Rachford):   z_{j|i} ← ½ z_{j|i} + ½ y_{i|j}
"""

from __future__ import annotations

from typing import ClassVar

import torch

from fedweave.algorithms.decentralized.base import DecentralizedAlgorithm


class EdgeDuals(DecentralizedAlgorithm):
    """Duals ``z[slots, P]`` (slot state) and their exchange; ``averaged`` picks ADMM."""

    slot_state = ("z",)
    averaged: ClassVar[bool] = False

    def dual_message(self, slots: torch.Tensor) -> torch.Tensor:
        """y_{i|j} = z_{i|j} − 2 A_{i|j} w_i for the held ``slots``."""
        return self.z[slots] - 2 * self.sign[slots] * self.x[self.own[slots]]

    def receive_dual(self, slots: torch.Tensor, y: torch.Tensor) -> None:
        """PDMM: z ← y; ADMM: z ← ½z + ½y."""
        self.z[slots] = 0.5 * (self.z[slots] + y) if self.averaged else y

    def algorithm_state(self) -> dict[str, torch.Tensor]:
        return {"z": self.z}

    def load_algorithm_state(self, state: dict[str, torch.Tensor]) -> None:
        self.z = state["z"]
