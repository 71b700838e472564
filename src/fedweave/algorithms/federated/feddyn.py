"""FedDyn (Acar, Zhao, Matas, Mattina, Whatmough & Saligrama 2021, "Federated Learning Based
on Dynamic Regularization", ICLR), Algorithm 1.

Client i of the cohort P_t solves, from the server model θ^{t−1},

    θ_i^t = argmin_θ  L_i(θ) − ⟨∇L_i(θ_i^{t−1}), θ⟩ + (α/2)‖θ − θ^{t−1}‖²

(local SGD on that objective: the parameter terms ``Linear(−g_i)`` and ``Proximal(α, θ^{t−1})``
of ``training.objectives``, so every engine, the fused one included, runs it), then updates
its gradient state g_i = ∇L_i(θ_i^{t−1}) (zero before its first round) by the first-order
condition of that problem:

    g_i ← g_i − α(θ_i^t − θ^{t−1})

The server keeps h (zero at first):

    h ← h − α (1/m) Σ_{i∈P_t} (θ_i^t − θ^{t−1})          (m = ``data.nodes``, all clients)
    θ^t = (1/|P_t|) Σ_{i∈P_t} θ_i^t − h/α

and applies Δ = θ^{t−1} − θ^t through the server optimizer (plain SGD with lr 1, the
default, sets θ^t exactly as above). At a fixed point every ∇L_i(θ_i) = g_i with θ_i = θ and
Σ_i g_i = 0, so θ is a stationary point of Σ_i L_i: the global optimum of a convex problem,
whatever the number of local steps (FedAvg's fixed point is not).

The g_i are per-client state: one row of P floats per client that has trained
(``core.client_store.ClientStore``), 4·P bytes per client. α defaults to 0.01 (the paper tunes
α ∈ {0.1, 0.01, 0.001}). Robust aggregators and client-level DP are refused (the server's h
sums every raw update).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.base import FederatedAlgorithm
from fedweave.algorithms.federated.server import ServerOptConfig
from fedweave.context import RunContext
from fedweave.core.client_store import ClientStore
from fedweave.core.population import mean_buffers
from fedweave.core.state import State, section
from fedweave.training.objectives import Linear, Objective, Proximal


class FedDynConfig(ServerOptConfig):
    name: Literal["feddyn"] = "feddyn"
    alpha: float = Field(0.01, gt=0, description="FedDyn's dynamic-regulariser weight α (Acar "
                         "et al. 2021 tune α ∈ {0.1, 0.01, 0.001})")


@register_algorithm("feddyn", FedDynConfig)
class FedDyn(FederatedAlgorithm):
    """Local: L_i(θ) − ⟨g_i, θ⟩ + (α/2)‖θ − θ^{t−1}‖²; g_i ← g_i − α(θ_i − θ^{t−1});
    h ← h − (α/m) Σ(θ_i − θ^{t−1}); θ^t = mean θ_i − h/α (module docstring)."""

    config: FedDynConfig

    def __init__(self, ctx: RunContext, config: FedDynConfig) -> None:
        super().__init__(ctx, config)
        x = self.server.x
        self.h = torch.zeros_like(x)
        self.grads = ClientStore(ctx.data.nodes, x.numel(), x.dtype, x.device)

    def round(self, r: int) -> RoundResult:
        ctx, alpha = self.ctx, self.config.alpha
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach()
        k = len(clients)
        g_i = self.grads.gather(clients)
        start, buffers = self.start(k)
        local = ctx.trainer.train(clients, start, buffers, r, ctx.lr(r),
                                  Objective(terms=(Linear(-g_i), Proximal(alpha, x))))
        if k:
            moved = local.params - x
            self.grads.scatter(clients, g_i - alpha * moved)
            self.h = self.h - (alpha / ctx.data.nodes) * moved.sum(0)
            target = local.params.mean(0) - self.h / alpha
            self.server.step(x - target)
            self.buffers = mean_buffers(local.buffers, local.num_samples)
        return self.result(plan, local)

    def state(self) -> State:
        return {**super().state(), "h": self.h, "client_grads": self.grads.state()}

    def load_state(self, state: State) -> None:
        super().load_state(state)
        self.h = state["h"].to(self.h)
        self.grads.load(section(state, "client_grads"))
