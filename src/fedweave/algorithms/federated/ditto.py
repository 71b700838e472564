"""Ditto (Li et al. 2021, "Ditto: Fair and Robust Federated Learning Through
Personalization")."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.personal import PersonalConfig, PersonalModels
from fedweave.core.population import Buffers, mean_buffers, stack_buffers
from fedweave.training.objectives import Objective, Proximal


class DittoConfig(PersonalConfig):
    """λ = 0.1 by default (the paper tunes λ per data set over a small grid, §5)."""

    name: Literal["ditto"] = "ditto"
    lam: float = Field(0.1, ge=0, description="ditto: λ of the personal model's pull "
                       "(λ/2)‖v_i − w‖² to the global model")


@register_algorithm("ditto", DittoConfig)
class Ditto(PersonalModels):
    """Global model w trained exactly as FedAvg: w_i ← LocalSGD(w) on f_i,
    w ← ServerOpt(aggregate_i w_i). Alongside, each client's personal model v_i (w for a
    client not seen yet) takes the same local epochs on h_i(v) = f_i(v) + (λ/2)‖v − w‖²
    (w the round's global model). The personal model of client i is v_i."""

    config: DittoConfig

    def personal_models(self, clients: torch.Tensor) -> tuple[torch.Tensor, Buffers]:
        return self.store.gather(clients, self.server.x.detach()), \
            stack_buffers(self.buffers, len(clients))

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach().clone()
        start, buffers = self.start(len(clients))
        local = ctx.trainer.train(clients, start, buffers, r, ctx.lr(r))
        if len(clients):
            v = self.store.gather(clients, x)
            personal = ctx.trainer.train(clients, v, buffers, r, ctx.lr(r),
                                         Objective(terms=(Proximal(self.config.lam, x),)))
            self.store.scatter(clients, personal.params)
            self.server.step(x - self.aggregate(local.params, local.num_samples, x))
            self.buffers = mean_buffers(local.buffers, local.num_samples)
        return self.result(plan, local)
