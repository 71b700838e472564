"""FedAvg (McMahan et al. 2017) and FedProx (Li et al. 2020) with any server optimizer."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.base import FederatedAlgorithm
from fedweave.algorithms.federated.server import ServerOptConfig
from fedweave.core.population import mean_buffers
from fedweave.training.objectives import Objective, proximal


class FedAvgConfig(ServerOptConfig):
    name: Literal["fedavg"] = "fedavg"
    uses_aggregator: ClassVar[bool] = True
    client_privacy: ClassVar[bool] = True
    prox_mu: float = Field(0.0, ge=0, description="FedProx proximal term μ")


class FedProxConfig(FedAvgConfig):
    name: Literal["fedprox"] = "fedprox"  # type: ignore[assignment]
    prox_mu: float = Field(0.01, ge=0, description="FedProx proximal term μ")


@register_algorithm("fedavg", FedAvgConfig)
class FedAvg(FederatedAlgorithm):
    """Round: cohort ← sample(seed, r); x_i ← LocalSGD(x) on CE (+ μ/2‖x_i − x‖² with
    FedProx); x̄ = aggregate(x_i; n_i) (weighted mean by default);
    x ← ServerOpt(x, Δ = x − x̄)."""

    config: FedAvgConfig

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach()
        start, buffers = self.start(len(clients))
        local = ctx.trainer.train(clients, start, buffers, r, ctx.lr(r),
                                  Objective(terms=proximal(self.config.prox_mu, x)))
        if len(clients) or self.ledger is not None:  # DP-FedAvg releases noise every round
            self.server.step(x - self.aggregate(local.params, local.num_samples, x))
        if len(clients):
            self.buffers = mean_buffers(local.buffers, local.num_samples)
        return self.result(plan, local)


@register_algorithm("fedprox", FedProxConfig)
class FedProx(FedAvg):
    """FedAvg whose local loss adds (μ/2)‖x_i − x‖² (Li et al. 2020); μ defaults to 0.01."""
