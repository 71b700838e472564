"""FedFix (Fraboni, Vidal, Kameni, Lorenzi 2023, "A General Theory for Federated Optimization
with Asynchronous and Heterogeneous Clients Updates", JMLR)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from fedweave.algorithms.asynchronous.base import AsyncAlgorithm, AsyncConfig, Job
from fedweave.algorithms.base import register_algorithm
from fedweave.sim.scheduler import Event


class FedFixConfig(AsyncConfig):
    name: Literal["fedfix"] = "fedfix"
    concurrency: int | None = Field(None, ge=1, description="clients with a job (in flight "
                                    "or waiting for the next aggregation); null = every client")
    interval_s: float = Field(10.0, gt=0, description="simulated seconds between aggregations")
    server_lr: float = Field(1.0, gt=0, description="server learning rate η_g")


@register_algorithm("fedfix", FedFixConfig)
class FedFix(AsyncAlgorithm):
    """Every ``interval_s`` simulated seconds the server applies what arrived since the last
    aggregation, x ← x − η_g Σ_{i arrived} p_i Δ_i with p_i = n_i / Σ_j n_j over all clients
    and Δ_i = x_start,i − x_i; the clients that arrived wait for it and start again from the
    new model. Intervals in which nothing arrived do not update (``rounds`` counts updates)."""

    config: FedFixConfig
    keep: ClassVar = "delta"

    def start(self) -> None:
        self.clock.at(self.config.interval_s, "merge", -1)

    def on_arrival(self, job: Job) -> None:
        return None  # held until the next aggregation

    def on_merge(self, event: Event) -> list[Job] | None:
        self.clock.at(event.time + self.config.interval_s, "merge", -1)
        held = sorted((j for j in self.jobs.values() if j.arrived), key=lambda j: j.node)
        if not held:
            return None
        sizes = self.sizes.double()
        total = float(sizes.sum())
        step = torch.zeros_like(self.x)
        for job in held:
            step.add_(job.row, alpha=float(sizes[job.node]) / total)
            self.release(job)
        self.x = self.x - self.config.server_lr * step
        self.mix_buffers(held, [float(sizes[j.node]) for j in held], 1.0)
        return held
