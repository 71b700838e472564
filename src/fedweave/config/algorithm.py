"""The pluggable ``algorithm`` and ``aggregator`` sections (federated, cohort and server keys
live in each algorithm's and aggregator's own config class, registered by the module that
defines it)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from fedweave.config.base import Pluggable, RootView, Section


class AlgorithmConfig(Section):
    """Base of every algorithm's config; subclasses fix ``name`` with a Literal."""

    name: str
    kind: ClassVar[Literal["federated", "decentralized", "async", "centralized"]] = "federated"
    #: True when ``clock.asynchronous`` changes how the algorithm runs
    supports_async: ClassVar[bool] = False
    #: True when the server combines client rows with the ``aggregator`` section's rule
    uses_aggregator: ClassVar[bool] = False
    #: True when that aggregate is the only thing released about a client (client-level DP)
    client_privacy: ClassVar[bool] = False

    def check(self, config: RootView) -> None:
        """Rules between this algorithm's keys and the rest of ``config`` (e.g. a cohort
        against ``data.nodes``); raise ``ValueError`` naming the key and the fix."""


ALGORITHM_CONFIGS = Pluggable("algorithm", "fedavg")


def register_algorithm_config(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: make ``algorithm.name: <name>`` select this config class."""
    return ALGORITHM_CONFIGS.register(name)


class AggregatorConfig(Section):
    """How the server combines the rows trained in a round (``fedweave.algorithms.federated.
    aggregate``). ``name: null`` keeps the algorithm's own rule (FedAvg, FedProx, clustered:
    ``weighted_mean`` by training samples; SCAFFOLD: ``mean``)."""

    name: str | None = Field(None, description="aggregation rule; null = the algorithm's own")

    def check(self, config: RootView) -> None:
        """An aggregation rule needs an algorithm that aggregates client rows; a registered
        rule's own cross-section rules extend this (call ``super().check(config)``)."""
        alg = config.algorithm
        if self.name is not None and not alg.uses_aggregator:
            raise ValueError(
                f"aggregator.name={self.name}: algorithm.name={alg.name} does not "
                "aggregate client rows; remove the aggregator section")


AGGREGATOR_CONFIGS = Pluggable("aggregator", None)
AGGREGATOR_CONFIGS.classes[None] = AggregatorConfig  # type: ignore[index]


def register_aggregator_config(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: make ``aggregator.name: <name>`` select this config class."""
    return AGGREGATOR_CONFIGS.register(name)
