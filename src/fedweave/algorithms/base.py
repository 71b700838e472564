"""The Algorithm protocol and its registry.

An algorithm owns its state (global model, cluster models, node stack, duals, ...) and
implements ``round(r)``: one federated round (or, for asynchronous algorithms, one server
update) or one decentralized epoch. The runner evaluates ``models()`` and writes records;
checkpoints hold ``state()`` (a nested mapping of tensors, ``fedweave.core.state``) and the
round index, and every random choice is re-derived from (seed, purpose, round, node), so a
resumed run continues exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch

from fedweave.config import AlgorithmConfig, register_algorithm_config
from fedweave.context import RunContext
from fedweave.core.population import Buffers
from fedweave.core.rounds import RoundResult
from fedweave.core.state import State
from fedweave.registry import Registry


class Algorithm(ABC):
    """Base class; subclasses set ``config_class`` and implement the round."""

    config_class: ClassVar[type[AlgorithmConfig]]
    per_node_models: ClassVar[bool] = False  # True: models() are the N nodes (decentralized)
    #: the headline accuracy (summary.json ``headline``, the last line of ``fedweave run``,
    #: the report): (key of the evaluated row, its label); None = the test accuracy
    headline: ClassVar[tuple[str, str] | None] = None

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        self.ctx, self.config = ctx, config

    @abstractmethod
    def round(self, r: int) -> RoundResult:
        """Run round (or epoch) ``r`` (0-based)."""

    @abstractmethod
    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        """The models to evaluate: ``params[M, P]``, stacked buffers and M labels
        (``["global"]`` for one server model, node ids for decentralized runs)."""

    def model_labels(self) -> list[str]:
        """The labels of ``models()``, without gathering the models (no collective)."""
        return self.models()[2]

    def model_weights(self) -> torch.Tensor | None:
        """Weights for averaging the evaluated models' metrics (None = equal)."""
        return None

    def client_models(self) -> torch.Tensor | None:
        """For every client, the index into ``models()`` of the model it uses (the runner
        evaluates it on the client's validation split, ``fedweave.evaluation``); None when the
        evaluated models are the nodes themselves or there are no clients. Default: the one
        global model of a federated run."""
        if self.per_node_models or self.config.kind == "centralized":
            return None
        _, _, labels = self.models()
        return torch.zeros(self.ctx.data.nodes, dtype=torch.int64) if len(labels) == 1 else None

    def personal_models(self, clients: torch.Tensor) -> tuple[torch.Tensor, Buffers] | None:
        """The model each of ``clients`` uses on its own test split (``fedweave.evaluation.
        personal_test``): ``params[k, P]`` and stacked buffers. Default: its row of
        ``models()`` (node i's model for per-node runs, else ``client_models()``'s pick: the
        global model); None when no model belongs to a client. Personalised methods return
        their per-client models, materialising only ``clients``."""
        if self.config.kind == "centralized":
            return None
        if self.per_node_models:
            rows = clients.long()
        else:
            index = self.client_models()
            if index is None:
                return None
            rows = index.cpu()[clients.cpu().long()]
        params, buffers, _ = self.models()
        rows = rows.to(params.device)
        return params[rows], {k: v[rows.to(v.device)] for k, v in buffers.items()}

    def write_artifacts(self, plots_dir: Path) -> None:  # noqa: B027 (optional hook)
        """Extra files for a new run directory (e.g. the communication graph)."""

    def finite(self) -> bool:
        """Whether every parameter is finite (checked every round; a NaN state is never
        checkpointed)."""
        params, _, _ = self.models()
        return bool(torch.isfinite(params).all())

    def info(self) -> dict[str, Any]:
        """Facts for summary.json (e.g. the neighbour exchange used)."""
        return {}

    @abstractmethod
    def state(self) -> State:
        """All tensors needed to continue after a restart (a nested mapping)."""

    @abstractmethod
    def load_state(self, state: State) -> None: ...


#: built-in algorithm name -> the module that registers it (imported on first use); a module of
#: the three packages that is not listed here is found by ``ALGORITHMS``' package scan
BUILTIN_ALGORITHMS = {
    **{name: f"fedweave.algorithms.federated.{module}" for name, module in (
        ("fedavg", "fedavg"), ("fedprox", "fedavg"), ("scaffold", "scaffold"),
        ("clustered", "clustered"), ("heterofl", "heterofl"), ("centralized", "centralized"),
        ("local", "local_only"))},
    **{name: f"fedweave.algorithms.asynchronous.{name}"
       for name in ("fedasync", "fedbuff", "fedfix", "prfl")},
    **{name: f"fedweave.algorithms.decentralized.{module}" for name, module in (
        ("dsgd", "dsgd"), ("dfedper", "dfedper"), ("gossip", "gossip"), ("cadmm", "cadmm"),
        ("gradient_tracking", "tracking"), ("d2", "tracking"),
        ("pdmm_sgd", "edge_consensus"), ("admm_sgd", "edge_consensus"),
        ("pdmm_isvr", "isvr"), ("admm_isvr", "isvr"))},
}
ALGORITHMS: Registry[type[Algorithm]] = Registry(
    "algorithm", BUILTIN_ALGORITHMS,
    packages=tuple(f"fedweave.algorithms.{family}"
                   for family in ("federated", "asynchronous", "decentralized")))


def register_algorithm(name: str, config_class: type[AlgorithmConfig]
                       ) -> Callable[[type[Algorithm]], type[Algorithm]]:
    """Register an algorithm class and make ``algorithm.name: <name>`` select its config."""

    def add(cls: type[Algorithm]) -> type[Algorithm]:
        register_algorithm_config(name)(config_class)
        cls.config_class = config_class
        ALGORITHMS.register(name)(cls)
        return cls

    return add
