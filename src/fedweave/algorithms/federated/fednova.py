"""FedNova (Wang, Liu, Liang, Joshi & Poor 2020, "Tackling the Objective Inconsistency Problem
in Heterogeneous Federated Optimization", NeurIPS): normalised averaging.

Client i takes τ_i local steps (``train.local_epochs`` over shards of unequal size gives
unequal τ_i). FedAvg's average of x − y_i then weights each client by how far it walked, so it
converges to the optimum of Σ_i p_i τ_i F_i / Σ_i p_i τ_i instead of Σ_i p_i F_i (objective
inconsistency). FedNova divides every update by the client's ``‖a_i‖₁`` and rescales the
average by the effective step count τ_eff:

    d_i = (x − y_i) / ‖a_i‖₁,      τ_eff = Σ_i p_i ‖a_i‖₁,      x ← x − τ_eff Σ_i p_i d_i

with p_i = n_i / Σ_cohort n_j and, for SGD with momentum ρ (the paper's heavy-ball case),
``‖a_i‖₁ = [τ_i − ρ(1 − ρ^τ_i)/(1 − ρ)] / (1 − ρ)`` (= τ_i for plain SGD). Equivalently each
client's model is rescaled to ỹ_i = x − (τ_eff/‖a_i‖₁)(x − y_i) and the rescaled models are
aggregated like FedAvg's, so every server optimizer and robust ``aggregator`` applies to them.
When every client takes the same steps, ỹ_i = y_i exactly and FedNova is FedAvg.

Local Adam and Nesterov momentum have no ‖a_i‖₁ in the paper and are refused at config time;
so is ``privacy.level=client`` (τ_eff is computed from every member's step count).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.base import FederatedAlgorithm
from fedweave.algorithms.federated.server import ServerOptConfig
from fedweave.config import RootView
from fedweave.core.population import mean_buffers


class FedNovaConfig(ServerOptConfig):
    """FedNova has no keys of its own: the local optimizer (``train.momentum``) fixes ‖a_i‖₁."""

    name: Literal["fednova"] = "fednova"
    uses_aggregator: ClassVar[bool] = True

    def check(self, config: RootView) -> None:
        super().check(config)
        train = config.train
        if train.optimizer != "sgd" or train.nesterov:
            raise ValueError("algorithm.name=fednova normalises SGD (with or without heavy-ball "
                             "momentum) only: set train.optimizer=sgd and train.nesterov=false")


def norm_a(steps: torch.Tensor, rho: float) -> torch.Tensor:
    """‖a_i‖₁ of τ_i local SGD steps with momentum ρ (float64): τ for ρ = 0, else
    [τ − ρ(1 − ρ^τ)/(1 − ρ)] / (1 − ρ) (= Σ_{t=1..τ} Σ_{k<t} ρ^k)."""
    tau = steps.to(torch.float64)
    if rho == 0:
        return tau
    return (tau - rho * (1 - rho ** tau) / (1 - rho)) / (1 - rho)


def normalised(x: torch.Tensor, y: torch.Tensor, steps: torch.Tensor, n: torch.Tensor,
               rho: float = 0.0) -> torch.Tensor:
    """ỹ_i = x − (τ_eff/‖a_i‖₁)(x − y_i), τ_eff = Σ p_i ‖a_i‖₁, p_i = n_i/Σ n_j (``y``
    itself when every ‖a_i‖₁ is equal: then τ_eff/‖a_i‖₁ = 1)."""
    if len(y) == 0:
        return y
    a = norm_a(steps, rho)
    if bool((a == a[0]).all()):
        return y
    p = n.to(torch.float64).cpu()
    tau_eff = float((p * a).sum() / p.sum())
    scale = (tau_eff / a).to(y.dtype).to(y.device).view(-1, 1)
    return x - scale * (x - y)


@register_algorithm("fednova", FedNovaConfig)
class FedNova(FederatedAlgorithm):
    """Round: y_i ← LocalSGD(x) for τ_i steps; ỹ_i = x − (τ_eff/‖a_i‖₁)(x − y_i);
    x ← ServerOpt(x, Δ = x − aggregate(ỹ_i; n_i)) (module docstring)."""

    config: FedNovaConfig

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach()
        start, buffers = self.start(len(clients))
        local = ctx.trainer.train(clients, start, buffers, r, ctx.lr(r))
        if len(clients) or self.ledger is not None:
            rows = normalised(x, local.params, local.steps, local.num_samples,
                              ctx.config.train.momentum)
            self.server.step(x - self.aggregate(rows, local.num_samples, x))
        if len(clients):
            self.buffers = mean_buffers(local.buffers, local.num_samples)
        return self.result(plan, local)
