"""FedRep (Collins et al. 2021, "Exploiting Shared Representations for Personalized
Federated Learning")."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.federated.personal import (
    Freeze,
    HeadConfig,
    PartialSharing,
    head_mask,
)
from fedweave.core.population import Buffers
from fedweave.training.objectives import Objective
from fedweave.training.protocol import LocalResult
from fedweave.training.trainer import LocalTrainer


class FedRepConfig(HeadConfig):
    """Defaults from the paper's experiments (§5): 10 local epochs for the head, then 1 for
    the representation."""

    name: Literal["fedrep"] = "fedrep"
    own_loop: ClassVar[bool] = True
    head_epochs: float = Field(10.0, gt=0, description="fedrep: local epochs on the head "
                               "(body frozen) each round, before the body epochs")
    body_epochs: float = Field(1.0, gt=0, description="fedrep: local epochs on the body "
                               "(head frozen) each round")


@register_algorithm("fedrep", FedRepConfig)
class FedRep(PartialSharing):
    """Shared body φ, personal head h_i. Round: client i first updates its head with φ fixed,
    h_i ← h_i − η∇_h f_i(φ, h_i) for ``head_epochs``, then the body with its new head fixed,
    φ_i ← φ − η∇_φ f_i(φ, h_i) for ``body_epochs``; φ ← ServerOpt(aggregate_i φ_i). The
    personal model of client i is (φ, h_i). ``train.local_epochs``/``local_steps`` are not
    used (the two phases set the local work)."""

    config: FedRepConfig
    phase_offset: ClassVar[int] = 1 << 20  # the head phase draws its batches as another round

    def personal_mask(self) -> torch.Tensor:
        return head_mask(self.ctx, self.config.head)

    def phase(self, r: int, clients: torch.Tensor, params: torch.Tensor, buffers: Buffers,
              epochs: float, trainable: torch.Tensor, offset: int) -> LocalResult:
        """``epochs`` of local SGD on the ``trainable`` coordinates (the rest restored)."""
        ctx = self.ctx
        cfg = ctx.config.train.model_copy(update={"local_epochs": epochs, "local_steps": None})
        frozen = Objective(terms=(Freeze(trainable.to(params.dtype), cfg.weight_decay),))
        keys = torch.full((len(clients),), r + offset, dtype=torch.int64)
        local = LocalTrainer(ctx.local_engine, ctx.data, cfg).train(
            clients, params, buffers, r, ctx.lr(r), frozen, batch_keys=keys)
        local.params[:, ~trainable] = params[:, ~trainable]
        return local

    def local_train(self, r: int, clients: torch.Tensor, params: torch.Tensor,
                    buffers: Buffers) -> LocalResult:
        head = self.mask
        first = self.phase(r, clients, params, buffers, self.config.head_epochs, head,
                           self.phase_offset)
        second = self.phase(r, clients, first.params, first.buffers, self.config.body_epochs,
                            ~head, 0)
        second.steps = first.steps + second.steps
        return second
