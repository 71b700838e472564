"""APFL (Deng et al. 2020, "Adaptive Personalized Federated Learning")."""

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


class APFLConfig(PersonalConfig):
    """α starts at 0.5 and is learned (the paper's adaptive α, §3, Algorithm 1)."""

    name: Literal["apfl"] = "apfl"
    own_loop: ClassVar[bool] = True
    alpha: float = Field(0.5, ge=0, le=1, description="apfl: initial mixing weight α_i of "
                         "the personal model")
    learn_alpha: bool = Field(True, description="apfl: learn α_i by gradient descent "
                              "(clipped to [0, 1]); false keeps α_i = alpha")
    alpha_lr: float | None = Field(None, gt=0, description="apfl: step size of α_i; null = "
                                   "train.lr")


@register_algorithm("apfl", APFLConfig)
class APFL(PersonalModels):
    """Client i keeps v_i and α_i (v_i = w, α_i = alpha when first seen). Per local step on a
    batch D, with the mixed model v̄ = α_i v_i + (1 − α_i) w_i:
    w_i ← w_i − η∇f_i(w_i; D);  v_i ← v_i − η α_i ∇f_i(v̄; D);
    α_i ← clip(α_i − η_α ⟨∇f_i(v̄; D), v_i − w_i⟩, 0, 1).
    The server averages the w_i as FedAvg (so α = 0, not learned, is FedAvg). The personal
    model of client i is α_i v_i + (1 − α_i) w."""

    config: APFLConfig
    extra_columns = 1  # α_i after the personal model v_i

    def __init__(self, ctx: RunContext, config: APFLConfig) -> None:  # type: ignore[override]
        super().__init__(ctx, config)
        self.optimizer = FunctionalOptimizer(ctx.config.train)

    def default_row(self) -> torch.Tensor:
        x = self.server.x.detach()
        return torch.cat([x, x.new_full((1,), self.config.alpha)])

    def personal_models(self, clients: torch.Tensor) -> tuple[torch.Tensor, Buffers]:
        rows = self.store.gather(clients, self.default_row())
        v, a = rows[:, :-1], rows[:, -1:]
        return a * v + (1 - a) * self.server.x.detach(), stack_buffers(self.buffers,
                                                                      len(clients))

    def round(self, r: int) -> RoundResult:
        ctx, cfg = self.ctx, self.config
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach().clone()
        start, buffers = self.start(len(clients))
        rows = self.store.gather(clients, self.default_row())
        w, v, a = start.clone(), rows[:, :-1].contiguous(), rows[:, -1:].contiguous()
        sw, sv = self.optimizer.init(w), self.optimizer.init(v)
        steps = Steps(ctx, clients, r)
        lr = ctx.lr(r)
        alpha_lr = lr if cfg.alpha_lr is None else cfg.alpha_lr
        for s in range(steps.count):
            act = steps.active(s)
            out = steps.grads(w, buffers, s)
            steps.record(out, s)
            gm = steps.grads(a * v + (1 - a) * w, buffers, s).grads
            if cfg.learn_alpha:
                ga = ((v - w) * gm).sum(1, keepdim=True)
                a = torch.where(act.view(-1, 1), (a - alpha_lr * ga).clamp(0, 1), a)
            w = self.optimizer.step(w, out.grads, sw, lr, act, inplace=True)
            v = self.optimizer.step(v, a * gm, sv, lr, act, inplace=True)
        local = steps.result(w, buffers)
        if len(clients):
            self.store.scatter(clients, torch.cat([v, a], 1))
            self.server.step(x - self.aggregate(w, local.num_samples, x))
        return self.result(plan, local)
