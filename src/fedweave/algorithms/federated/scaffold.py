"""SCAFFOLD (Karimireddy et al. 2020), option II control variates."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.base import FederatedAlgorithm
from fedweave.algorithms.federated.server import ServerOptConfig
from fedweave.core.population import mean_buffers
from fedweave.core.state import State, section
from fedweave.training.objectives import Linear, Objective


class ScaffoldConfig(ServerOptConfig):
    """``server_lr`` is the global step size η_g; other server optimizers apply to the same
    pseudo-gradient x − aggregate_i(y_i)."""

    name: Literal["scaffold"] = "scaffold"
    uses_aggregator: ClassVar[bool] = True


@register_algorithm("scaffold", ScaffoldConfig)
class Scaffold(FederatedAlgorithm):
    """Local step: y ← y − η(g(y) − c_i + c) (the objective's linear term c − c_i).
    After K_i steps: c_i⁺ = c_i − c + (x − y_i)/(K_i η);  x ← x + η_g·(mean_i y_i − x);
    c ← c + (|S|/N)·mean_i(c_i⁺ − c_i). Client variates are kept only for clients seen."""

    config: ScaffoldConfig
    default_aggregator = "mean"
    messages = 2

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.c = torch.zeros_like(self.server.x.detach())
        self.c_i: dict[int, torch.Tensor] = {}

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach()
        k = len(clients)
        zero = torch.zeros_like(x)
        c_i = torch.stack([self.c_i.get(int(i), zero) for i in clients]) if k else x[None, :0]
        lr = ctx.lr(r)
        start, buffers = self.start(k)
        local = ctx.trainer.train(clients, start, buffers, r, lr,
                                  Objective(terms=(Linear(self.c - c_i),)) if k else None)
        if k:
            steps = local.steps.to(x.dtype).to(x.device).view(-1, 1)
            c_new = c_i - self.c + (x - local.params) / (steps * lr)
            self.server.step(x - self.aggregate(local.params, local.num_samples, x))
            self.c = self.c + (k / ctx.data.nodes) * (c_new - c_i).mean(0)
            for j, node in enumerate(clients.tolist()):
                self.c_i[node] = c_new[j]
            self.buffers = mean_buffers(local.buffers, local.num_samples)
        return self.result(plan, local)

    def state(self) -> State:
        return {**super().state(), "c": self.c,
                "c_i": {str(node): v for node, v in self.c_i.items()}}

    def load_state(self, state: State) -> None:
        super().load_state(state)
        self.c = state["c"]
        self.c_i = {int(k): v for k, v in section(state, "c_i").items()}
