"""pFedMe (T Dinh et al. 2020, "Personalized Federated Learning with Moreau Envelopes")."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.personal import (
    PersonalConfig,
    PersonalModels,
    Steps,
)
from fedweave.context import RunContext
from fedweave.core.population import Buffers, stack_buffers
from fedweave.training.optim import FunctionalOptimizer


class PFedMeConfig(PersonalConfig):
    """Defaults from the paper's experiments (§5): λ = 15, K = 5 inner steps, personal
    learning rate 0.01, β = 1 (the server takes the clients' average)."""

    name: Literal["pfedme"] = "pfedme"
    own_loop: ClassVar[bool] = True
    lam: float = Field(15.0, gt=0, description="pfedme: λ of the Moreau envelope "
                       "(λ/2)‖θ − w_i‖²")
    inner_steps: int = Field(5, ge=1, description="pfedme: K gradient steps on the personal "
                             "problem per local step")
    personal_lr: float = Field(0.01, gt=0, description="pfedme: step size of the K inner "
                               "steps")
    beta: float = Field(1.0, gt=0, description="pfedme: server mixing w ← (1−β)w + β·mean "
                        "w_i (applied through the server optimizer)")


@register_algorithm("pfedme", PFedMeConfig)
class PFedMe(PersonalModels):
    """Client i: w_i ← w, θ ← w; per local step on a batch D: θ ← θ − η_p(∇f(θ; D) +
    λ(θ − w_i)) K times (θ̂ ≈ the proximal point of the Moreau envelope), then
    w_i ← w_i − η·λ(w_i − θ̂) (the run's optimizer, train.lr). Server:
    w ← (1 − β)·w + β·aggregate_i w_i. The personal model of client i is its last θ̂."""

    config: PFedMeConfig

    def __init__(self, ctx: RunContext, config: PFedMeConfig) -> None:  # type: ignore[override]
        super().__init__(ctx, config)
        self.optimizer = FunctionalOptimizer(ctx.config.train)

    def personal_models(self, clients: torch.Tensor) -> tuple[torch.Tensor, Buffers]:
        return self.store.gather(clients, self.server.x.detach()), \
            stack_buffers(self.buffers, len(clients))

    def round(self, r: int) -> RoundResult:
        ctx, cfg = self.ctx, self.config
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach().clone()
        start, buffers = self.start(len(clients))
        w = start.clone()
        theta = w.clone()
        state = self.optimizer.init(w)
        steps = Steps(ctx, clients, r)
        lr = ctx.lr(r)
        for s in range(steps.count):
            rows = steps.active(s).view(-1, 1)
            for j in range(cfg.inner_steps):
                out = steps.grads(theta, buffers, s)
                if j == 0:
                    steps.record(out, s)
                g = out.grads.add_(theta - w, alpha=cfg.lam)
                theta = torch.where(rows, theta - cfg.personal_lr * g, theta)
            w = self.optimizer.step(w, cfg.lam * (w - theta), state, lr, steps.active(s),
                                    inplace=True)
        local = steps.result(w, buffers)
        if len(clients):
            self.store.scatter(clients, theta)
            self.server.step(cfg.beta * (x - self.aggregate(w, local.num_samples, x)))
        return self.result(plan, local)
