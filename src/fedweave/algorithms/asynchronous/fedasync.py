"""FedAsync (Xie, Koyejo, Gupta 2019, "Asynchronous Federated Optimization")."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.asynchronous.base import AsyncAlgorithm, Job
from fedweave.algorithms.asynchronous.staleness import StalenessConfig
from fedweave.algorithms.base import register_algorithm
from fedweave.training.objectives import Objective, proximal


class FedAsyncConfig(StalenessConfig):
    name: Literal["fedasync"] = "fedasync"
    alpha: float = Field(0.6, gt=0, le=1, description="mixing weight α (α_t = α·s(τ))")
    rho: float = Field(0.0, ge=0, description="proximal term (ρ/2)‖x_i − x_start‖² of the "
                       "local loss (FedAsync's regularized variant; 0 = plain SGD)")


@register_algorithm("fedasync", FedAsyncConfig)
class FedAsync(AsyncAlgorithm):
    """Every arrival updates the server: x ← (1 − α_t) x + α_t x_i, α_t = α·s(τ); the client
    is re-dispatched with the new model. Clients minimise f_i(x) + (ρ/2)‖x − x_start‖²."""

    config: FedAsyncConfig

    def objective(self, jobs: list[Job], rows: torch.Tensor) -> Objective:
        return Objective(terms=proximal(self.config.rho, rows))

    def on_arrival(self, job: Job) -> list[Job]:
        a = self.config.alpha * self.config.weight(self.tau(job))
        self.x = torch.lerp(self.x, job.row, a)
        self.mix_buffers([job], [1.0], a)
        self.release(job)
        return [job]
