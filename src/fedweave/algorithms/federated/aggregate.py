"""Aggregators: the one seam between "rows trained in a round" and "the server update".

An aggregator maps the cohort's trained models ``rows[K, P]`` (with per-row weights, e.g.
training samples n_i, and the model they started from, ``center[P]``) to one model ``[P]``:

    mean:           (1/K) Σ_i x_i
    weighted_mean:  Σ_i w_i x_i / Σ_i w_i

Robust rules (coordinate median, trimmed mean, Krum, norm clipping) and noise for differential
privacy plug in here: register a class with ``@register_aggregator(name, ConfigClass)``; the
``aggregator`` config section selects it by name (``aggregator.name: null`` keeps the
algorithm's own rule). Every rule is a tensor op over ``[K, P]``, never a loop over clients,
and sees the gathered rows of every process, so it works with the distributed engine.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fedweave.config import AggregatorConfig, register_aggregator_config
from fedweave.core.population import weighted_mean
from fedweave.registry import Registry


class Aggregator:
    """Combines trained rows into one model; subclasses implement ``__call__``."""

    def __init__(self, config: AggregatorConfig) -> None:
        self.config = config

    def __call__(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor
                 ) -> torch.Tensor:
        raise NotImplementedError


AGGREGATORS: Registry[type[Aggregator]] = Registry("aggregator")


def register_aggregator(name: str, config_class: type[AggregatorConfig] = AggregatorConfig
                        ) -> Callable[[type[Aggregator]], type[Aggregator]]:
    """Register an aggregator and make ``aggregator.name: <name>`` select its config."""

    def add(cls: type[Aggregator]) -> type[Aggregator]:
        register_aggregator_config(name)(config_class)
        AGGREGATORS.register(name)(cls)
        return cls

    return add


@register_aggregator("mean")
class Mean(Aggregator):
    """(1/K) Σ_i x_i: every row counts the same (SCAFFOLD's server average)."""

    def __call__(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor
                 ) -> torch.Tensor:
        return rows.mean(0)


@register_aggregator("weighted_mean")
class WeightedMean(Aggregator):
    """Σ_i w_i x_i / Σ_i w_i with w_i the training samples of client i (FedAvg)."""

    def __call__(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor
                 ) -> torch.Tensor:
        return weighted_mean(rows, weights)


def build_aggregator(config: AggregatorConfig, default: str) -> Aggregator:
    """The configured rule, or the algorithm's ``default`` when ``config.name`` is null."""
    name = config.name or default
    cfg = config if config.name else AggregatorConfig(name=name)
    return AGGREGATORS.get(name)(cfg)
