"""SCAFFOLD (Karimireddy et al. 2020), option II control variates."""

from __future__ import annotations

from typing import Literal

import torch

from fedweave.algorithms.base import RoundResult, register_algorithm, tensors_with_prefix
from fedweave.algorithms.federated.fedavg import FederatedAlgorithm
from fedweave.algorithms.federated.server import ServerOptConfig
from fedweave.population import mean_buffers, stack_buffers


class ScaffoldConfig(ServerOptConfig):
    """``server_lr`` is the global step size η_g; other server optimizers apply to the same
    pseudo-gradient x − mean_i y_i."""

    name: Literal["scaffold"] = "scaffold"


@register_algorithm("scaffold", ScaffoldConfig)
class Scaffold(FederatedAlgorithm):
    """Local step: y ← y − η(g(y) − c_i + c). After K_i steps:
    c_i⁺ = c_i − c + (x − y_i)/(K_i η);  x ← x + η_g·mean_i(y_i − x);
    c ← c + (|S|/N)·mean_i(c_i⁺ − c_i). Client variates are kept only for clients seen."""

    config: ScaffoldConfig

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.c = torch.zeros_like(self.server.x.detach())
        self.c_i: dict[int, torch.Tensor] = {}

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        cohort = self.cohort(r)
        x = self.server.x.detach()
        k = len(cohort)
        zero = torch.zeros_like(x)
        c_i = torch.stack([self.c_i.get(int(i), zero) for i in cohort])
        lr = ctx.lr(r)
        local = ctx.trainer.train(cohort, x.expand(k, -1),
                                  stack_buffers(self.buffers, k), r, lr,
                                  correction=self.c - c_i)
        steps = local.steps.to(x.dtype).view(-1, 1)
        c_new = c_i - self.c + (x - local.params) / (steps * lr)
        self.server.step(x - local.params.mean(0))
        self.c = self.c + (k / ctx.data.nodes) * (c_new - c_i).mean(0)
        for j, node in enumerate(cohort.tolist()):
            self.c_i[node] = c_new[j]
        self.buffers = mean_buffers(local.buffers, local.num_samples)
        traffic = 2 * k * ctx.model_bytes
        return RoundResult(
            *local.mean_train(),
            bytes_up=traffic, bytes_down=traffic,
            sim_time=self.round_time(cohort, local, messages=2),
        )

    def state(self) -> dict[str, torch.Tensor]:
        out = super().state()
        out["c"] = self.c
        out.update({f"c_i.{node}": v for node, v in self.c_i.items()})
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state(state)
        self.c = state["c"]
        self.c_i = {int(k): v for k, v in tensors_with_prefix(state, "c_i").items()}
