"""Which clients take part in a round: cohorts drawn from (seed, "cohort", round) only, so a
cohort never depends on execution order, process count or what happened before."""

from __future__ import annotations

import torch
from pydantic import Field, model_validator

from fedweave.config import AlgorithmConfig, RootView
from fedweave.rng import numpy_rng


class CohortConfig(AlgorithmConfig):
    """Cohort by count or by fraction (one of the two; default: all clients)."""

    clients_per_round: int | None = Field(None, ge=1, description="clients per round; more "
                                          "than data.nodes is refused")
    fraction: float | None = Field(None, gt=0, le=1, description="fraction of data.nodes per "
                                   "round, rounded, at least 1 (alternative to "
                                   "clients_per_round)")

    @model_validator(mode="after")
    def _one_of(self) -> CohortConfig:
        if self.clients_per_round is not None and self.fraction is not None:
            raise ValueError("set algorithm.clients_per_round or algorithm.fraction, not both")
        return self

    def check(self, config: RootView) -> None:
        nodes = config.data.nodes
        if self.clients_per_round is not None and self.clients_per_round > nodes:
            raise ValueError(f"algorithm.clients_per_round={self.clients_per_round} exceeds "
                             f"data.nodes={nodes}: lower it, or raise data.nodes")

    def cohort(self, nodes: int) -> int:
        """Clients sampled per round out of ``nodes``."""
        return cohort_size(nodes, self.clients_per_round, self.fraction)


def cohort_size(nodes: int, clients_per_round: int | None, fraction: float | None) -> int:
    if clients_per_round is not None:
        return min(clients_per_round, nodes)
    return max(1, round((fraction if fraction is not None else 1.0) * nodes))


def sample_cohort(seed: int, round_index: int, nodes: int, size: int) -> torch.Tensor:
    """Sorted cohort drawn without replacement with an RNG from (seed, "cohort", round) only."""
    if size >= nodes:
        return torch.arange(nodes)
    pick = numpy_rng(seed, "cohort", round_index).choice(nodes, size, replace=False)
    return torch.from_numpy(pick).sort().values
