"""FedBN (Li et al. 2021, "FedBN: Federated Learning on Non-IID Features via Local Batch
Normalization")."""

from __future__ import annotations

from typing import Literal

import torch

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.federated.personal import (
    PartialSharing,
    PersonalConfig,
    norm_prefixes,
    prefix_mask,
)
from fedweave.errors import UserError


class FedBNConfig(PersonalConfig):
    name: Literal["fedbn"] = "fedbn"


@register_algorithm("fedbn", FedBNConfig)
class FedBN(PartialSharing):
    """FedAvg on every parameter except the normalisation layers': their affine parameters
    (γ, β) and running statistics (BatchNorm's mean/var) stay on each client. Round: client i
    trains from (w, γ_i, β_i, stats_i); w ← ServerOpt(aggregate_i w_i). The personal model
    of client i is (w, γ_i, β_i, stats_i). The paper uses BatchNorm; GroupNorm's (γ, β) are
    kept local the same way."""

    config: FedBNConfig
    personal_buffers = True

    def personal_mask(self) -> torch.Tensor:
        prefixes = norm_prefixes(self.ctx.model)
        mask = prefix_mask(self.ctx.layout, prefixes) if prefixes else None
        if mask is None or not bool(mask.any()):
            raise UserError(f"algorithm.name=fedbn: model.name={self.ctx.config.model.name} "
                            f"(model.norm={self.ctx.config.model.norm}) has no normalisation "
                            "layers to keep local; use model.norm=batch or group")
        return mask
