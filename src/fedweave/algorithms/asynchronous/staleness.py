"""Staleness weights s(τ) of asynchronous aggregation (Xie et al. 2019, §5.2), τ = the server
version when an update is merged minus the version its client started from."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedweave.algorithms.asynchronous.base import AsyncConfig

StalenessKind = Literal["constant", "poly", "hinge"]


def staleness_weight(kind: StalenessKind, tau: int, a: float, b: int) -> float:
    """constant: 1; poly: (τ + 1)^(−a); hinge: 1 if τ ≤ b else 1 / (a(τ − b) + 1)."""
    if kind == "constant":
        return 1.0
    if kind == "poly":
        return float((tau + 1) ** (-a))
    return 1.0 if tau <= b else 1.0 / (a * (tau - b) + 1.0)


class StalenessConfig(AsyncConfig):
    """Keys of the algorithms that weight an update by its staleness."""

    staleness: StalenessKind = Field("poly", description="s(τ): constant 1, poly (τ+1)^(−a), "
                                     "hinge 1 if τ ≤ b else 1/(a(τ−b)+1); τ in server versions")
    staleness_a: float = Field(0.5, ge=0, description="a of poly and hinge")
    staleness_b: int = Field(4, ge=0, description="b of hinge (versions)")

    def weight(self, tau: int) -> float:
        return staleness_weight(self.staleness, tau, self.staleness_a, self.staleness_b)
