"""FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation")."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from fedweave.algorithms.asynchronous.base import AsyncAlgorithm, Job
from fedweave.algorithms.asynchronous.staleness import StalenessConfig
from fedweave.algorithms.base import register_algorithm
from fedweave.config import AlgorithmConfig, RootView
from fedweave.context import RunContext
from fedweave.core.state import State

#: client updates a run may need in total (beyond, it cannot finish)
MAX_CLIENT_UPDATES = 10**8


class FedBuffConfig(StalenessConfig):
    name: Literal["fedbuff"] = "fedbuff"
    buffer_size: int = Field(10, ge=1, description="K: arrivals per server update")
    server_lr: float = Field(1.0, gt=0, description="server learning rate η_g")

    def check(self, config: RootView) -> None:
        super().check(config)
        jobs = config.rounds * self.buffer_size
        if jobs > MAX_CLIENT_UPDATES:
            raise ValueError(f"algorithm.buffer_size={self.buffer_size}: a server update waits "
                             f"for K client updates, so rounds={config.rounds} need {jobs:.3g} "
                             f"of them, more than a run can finish ({MAX_CLIENT_UPDATES:.0e}: "
                             "days even at a millisecond each); lower buffer_size or rounds")


@register_algorithm("fedbuff", FedBuffConfig)
class FedBuff(AsyncAlgorithm):
    """Clients send Δ_i = x_start − x_i and are re-dispatched at once; the server sums
    s(τ_i)·Δ_i over K arrivals, then x ← x − η_g·Σ/K (``concurrency`` C clients in flight)."""

    config: FedBuffConfig
    keep: ClassVar = "delta"

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        self.sum = torch.zeros_like(self.x)
        self.buffered: list[Job] = []

    def on_arrival(self, job: Job) -> list[Job] | None:
        self.sum.add_(job.row, alpha=self.config.weight(self.tau(job)))
        self.release(job)
        job.row = job.row[:0]  # its Δ is in the sum
        self.buffered.append(job)
        if len(self.buffered) < self.config.buffer_size:
            return None
        self.x = self.x - self.sum * (self.config.server_lr / self.config.buffer_size)
        merged, self.buffered = self.buffered, []
        self.mix_buffers(merged, [1.0] * len(merged), 1.0)
        self.sum.zero_()
        return merged

    def policy_state(self) -> State:  # an update empties the buffer, so it is empty here
        assert not self.buffered, "FedBuff checkpoints only between server updates"
        return {}
