"""LG-FedAvg (Liang et al. 2020, "Think Locally, Act Globally: Federated Learning with Local
and Global Representations")."""

from __future__ import annotations

from typing import Literal

import torch

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.federated.personal import HeadConfig, PartialSharing, head_mask


class LGFedAvgConfig(HeadConfig):
    name: Literal["lg_fedavg"] = "lg_fedavg"


@register_algorithm("lg_fedavg", LGFedAvgConfig)
class LGFedAvg(PartialSharing):
    """Local body (representation) l_i, global head g. Round: client i trains (l_i, g) by
    local SGD; g ← ServerOpt(aggregate_i g_i) (FedAvg on the head), l_i stays on the client.
    The personal model of client i is (l_i, g)."""

    config: LGFedAvgConfig

    def personal_mask(self) -> torch.Tensor:
        return ~head_mask(self.ctx, self.config.head)
