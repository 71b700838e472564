"""Per-FedAvg (Fallah et al. 2020, "Personalized Federated Learning with Theoretical
Guarantees: A Model-Agnostic Meta-Learning Approach")."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.base import FederatedAlgorithm
from fedweave.algorithms.federated.personal import PersonalConfig, Steps
from fedweave.core.population import Buffers, mean_buffers, stack_buffers
from fedweave.evaluation import finetune
from fedweave.training.optim import FunctionalOptimizer


class PerFedAvgConfig(PersonalConfig):
    """α = 0.01 (the inner, adaptation step; the outer step β is ``train.lr``); δ = 0.001 for
    the Hessian-free variant's finite difference."""

    name: Literal["per_fedavg"] = "per_fedavg"
    own_loop: ClassVar[bool] = True
    alpha: float = Field(0.01, gt=0, description="per_fedavg: α, the adaptation (inner) step "
                         "size, also of the one step each client takes before evaluation")
    variant: Literal["fo", "hf"] = Field("fo", description="per_fedavg: fo = first-order "
                                         "MAML; hf = Hessian-free (finite-difference "
                                         "Hessian-vector product)")
    delta: float = Field(0.001, gt=0, description="per_fedavg: δ of the hf variant's "
                         "(∇f(w + δu) − ∇f(w − δu))/(2δ)")


@register_algorithm("per_fedavg", PerFedAvgConfig)
class PerFedAvg(FederatedAlgorithm):
    """Client i, per local step on independent batches D, D′ (and D″):
    w̃ = w − α∇f_i(w; D);  u = ∇f_i(w̃; D′);
    fo: w ← w − β·u;   hf: w ← w − β·(u − α·[∇f_i(w + δu; D″) − ∇f_i(w − δu; D″)]/(2δ))
    (β = train.lr through the run's optimizer); the server averages as FedAvg. The personal
    model of client i is the global model after one step w − α∇f_i(w; D_i) on a batch of its
    training shard."""

    config: PerFedAvgConfig
    stream: ClassVar[int] = 1 << 20  # D′ and D″ draw their batches as other rounds

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.optimizer = FunctionalOptimizer(self.ctx.config.train)

    def personal_models(self, clients: torch.Tensor) -> tuple[torch.Tensor, Buffers]:
        x = self.server.x.detach()
        k = len(clients)
        key = 3 * self.stream + max(self.last_round, 0)
        return finetune(self.ctx, clients, x.expand(k, -1), stack_buffers(self.buffers, k), 1,
                        key, lr=self.config.alpha)

    def round(self, r: int) -> RoundResult:
        ctx, cfg = self.ctx, self.config
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach().clone()
        start, buffers = self.start(len(clients))
        w = start.clone()
        state = self.optimizer.init(w)
        d1 = Steps(ctx, clients, r)
        d2 = Steps(ctx, clients, r, self.stream).batches
        d3 = Steps(ctx, clients, r, 2 * self.stream).batches if cfg.variant == "hf" else None
        for s in range(d1.count):
            out = d1.grads(w, buffers, s)
            d1.record(out, s)
            buffers = out.buffers
            u = d1.grads(w - cfg.alpha * out.grads, buffers, s, d2).grads
            if d3 is not None:
                plus = d1.grads(w + cfg.delta * u, buffers, s, d3).grads
                minus = d1.grads(w - cfg.delta * u, buffers, s, d3).grads
                u = u - cfg.alpha * (plus - minus) / (2 * cfg.delta)
            w = self.optimizer.step(w, u, state, ctx.lr(r), d1.active(s), inplace=True)
        local = d1.result(w, buffers)
        if len(clients):
            self.server.step(x - self.aggregate(w, local.num_samples, x))
            self.buffers = mean_buffers(buffers, local.num_samples)
        return self.result(plan, local)
