"""FedPer (Arivazhagan et al. 2019, "Federated Learning with Personalization Layers")."""

from __future__ import annotations

from typing import Literal

import torch

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.federated.personal import HeadConfig, PartialSharing, head_mask


class FedPerConfig(HeadConfig):
    name: Literal["fedper"] = "fedper"


@register_algorithm("fedper", FedPerConfig)
class FedPer(PartialSharing):
    """Shared body b, personal head h_i. Round: client i trains (b, h_i) by local SGD from
    (b, h_i); b ← ServerOpt(aggregate_i b_i) (FedAvg on the body), h_i stays on the client.
    The personal model of client i is (b, h_i)."""

    config: FedPerConfig

    def personal_mask(self) -> torch.Tensor:
        return head_mask(self.ctx, self.config.head)
