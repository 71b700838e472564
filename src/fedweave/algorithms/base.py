"""The Algorithm protocol and the context every algorithm works in.

An algorithm owns its state (global model, cluster models, node stack, duals, ...) and
implements ``round(r)``: one federated round or one decentralized epoch. The runner evaluates
``models()`` and writes records; checkpoints hold ``state()`` (tensors) and the round index,
and every random choice is re-derived from (seed, purpose, round, node), so a resumed run
continues exactly.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fedweave.config import AlgorithmConfig, Config, register_algorithm_config
from fedweave.data.federated import FederatedData
from fedweave.population import Buffers, ParamLayout
from fedweave.registry import Registry
from fedweave.rng import numpy_rng
from fedweave.training.local import GradientEngine, LocalTrainer
from fedweave.training.optim import scheduled_lr


@dataclass
class RoundResult:
    """What a round reports: mean training loss/accuracy, traffic, virtual time spent."""

    train_loss: float
    train_acc: float
    bytes_up: int = 0
    bytes_down: int = 0
    sim_time: float = 0.0
    node_train: dict[str, torch.Tensor] = field(default_factory=dict)  # per evaluated model
    extras: dict[str, float] = field(default_factory=dict)


@dataclass
class RunContext:
    """Everything an algorithm needs: config, data, model template, engine, initial model."""

    config: Config
    data: FederatedData
    model: nn.Module
    layout: ParamLayout
    engine: GradientEngine
    init_params: torch.Tensor   # [P]
    init_buffers: Buffers       # {name: tensor} of one model
    make_engine: Callable[[FederatedData], GradientEngine]
    trainer: LocalTrainer = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.trainer = LocalTrainer(self.engine, self.data, self.config.train)

    @property
    def seed(self) -> int:
        return self.config.seed

    @property
    def device(self) -> torch.device:
        return self.init_params.device

    @property
    def model_bytes(self) -> int:
        return self.layout.total * self.init_params.element_size()

    def lr(self, round_index: int) -> float:
        return scheduled_lr(self.config.train, round_index)

    def with_data(self, data: FederatedData) -> RunContext:
        """The same context over other node shards (e.g. the centralized union)."""
        return dataclasses.replace(self, data=data, engine=self.make_engine(data))


class Algorithm(ABC):
    """Base class; subclasses set ``config_class`` and implement the round."""

    config_class: ClassVar[type[AlgorithmConfig]]
    per_node_models: ClassVar[bool] = False  # True: models() are the N nodes (decentralized)

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        self.ctx, self.config = ctx, config

    @abstractmethod
    def round(self, r: int) -> RoundResult:
        """Run round (or epoch) ``r`` (0-based)."""

    @abstractmethod
    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        """The models to evaluate: ``params[M, P]``, stacked buffers and M labels
        (``["global"]`` for one server model, node ids for decentralized runs)."""

    def model_weights(self) -> torch.Tensor | None:
        """Weights for averaging the evaluated models' metrics (None = equal)."""
        return None

    def write_artifacts(self, plots_dir: Path) -> None:  # noqa: B027 (optional hook)
        """Extra files for a new run directory (e.g. the communication graph)."""

    @abstractmethod
    def state(self) -> dict[str, torch.Tensor]:
        """All tensors needed to continue after a restart."""

    @abstractmethod
    def load_state(self, state: dict[str, torch.Tensor]) -> None: ...


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")


def register_algorithm(name: str, config_class: type[AlgorithmConfig]
                       ) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Register an algorithm class and make ``algorithm.name: <name>`` select its config."""

    def add(cls: type[Algorithm]) -> type[Algorithm]:
        register_algorithm_config(name)(config_class)
        cls.config_class = config_class
        ALGORITHMS.register(name)(cls)
        return cls

    return add


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


def draw_cohort(ctx: RunContext, clients_per_round: int | None, fraction: float | None,
                round_index: int) -> torch.Tensor:
    """The round's cohort of ``ctx.data.nodes`` clients (on the CPU), by count or fraction."""
    n = ctx.data.nodes
    return sample_cohort(ctx.seed, round_index, n, cohort_size(n, clients_per_round, fraction))


def state_to_tensors(prefix: str, obj: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Flatten a nested dict of tensors/numbers into ``{prefix.key: tensor}``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            out.update(state_to_tensors(name, value))
        elif isinstance(value, torch.Tensor):
            out[name] = value
        elif isinstance(value, int | float):
            out[name] = torch.tensor(value)
    return out


def tensors_with_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1:]: v for k, v in state.items() if k.startswith(prefix + ".")}
