"""Influence scorers: the protocol, the registry and what a scorer reads from a finished run.

One orientation for every scorer: **higher = more helpful to keep**. For the influence scores
(if_ekfac, if_exact, tracin, dice, loo) removing a high-scoring sample would raise the
validation loss; the difficulty scores are negated into it (EL2N: −error norm, forgetting:
−forgetting events, −∞ when never learned), so a mislabeled sample ranks least helpful under
every scorer and ``data.prune.keep: top`` keeps what the scores recommend (the difficulty
papers' "keep the hardest" is ``keep: lowest``). Scores are per training sample, keyed by
node and *global* training index (``scores.csv``: ``node,index,score``); DICE also scores
every (node, step) batch.

The validation loss is over a whole split, never one batch (``influence.validation``):
``global`` is the union of every node's validation split, ``node`` the scored sample's own
node's split. A sample of node j is scored with node j's model (decentralized runs) or the
global model (federated and centralized runs).
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from fedweave.algorithms.base import Algorithm
from fedweave.config import Config
from fedweave.context import RunContext, build_context
from fedweave.core.population import Buffers, select_buffers
from fedweave.core.state import unflatten
from fedweave.data.federated import FederatedData
from fedweave.errors import UserError
from fedweave.influence.probe import Probe
from fedweave.records.checkpoints import Checkpoints
from fedweave.registry import Registry


@dataclass
class Scores:
    """Per-sample scores (``node[M]``, global ``index[M]``, ``score[M]``), optional per-batch
    rows and facts about how they were computed."""

    node: torch.Tensor
    index: torch.Tensor
    score: torch.Tensor
    batches: list[dict[str, float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def per_node(cls, data: FederatedData, values: list[torch.Tensor],
                 meta: dict[str, Any] | None = None) -> Scores:
        """From one score vector per node, aligned with ``data.train_idx``."""
        node = torch.cat([torch.full((len(s),), j, dtype=torch.int64)
                          for j, s in enumerate(data.train_idx)])
        index = torch.cat([s.cpu() for s in data.train_idx])
        score = torch.cat([v.detach().double().cpu() for v in values])
        order = torch.argsort(index)
        return cls(node[order], index[order], score[order], meta=dict(meta or {}))

    def of_node(self, j: int) -> torch.Tensor:
        return self.score[self.node == j]


class Scorer(ABC):
    """A scoring method; ``score`` reads the finished run and returns per-sample scores."""

    name: ClassVar[str]
    #: kinds of run it works on
    kinds: ClassVar[tuple[str, ...]] = ("federated", "decentralized", "centralized", "async")
    #: reads the training checkpoints (stage 1 of ``fedweave prune`` then keeps every one)
    uses_checkpoints: ClassVar[bool] = False

    @abstractmethod
    def score(self, run: ScoredRun) -> Scores: ...


SCORERS: Registry[type[Scorer]] = Registry("influence.scorer")


def register_scorer(name: str) -> Callable[[type[Scorer]], type[Scorer]]:
    def add(cls: type[Scorer]) -> type[Scorer]:
        cls.name = name
        SCORERS.register(name)(cls)
        return cls

    return add


class ScoredRun:
    """A finished run directory (or one built in memory) as scorers see it: its resolved
    config, the rebuilt data and context, the algorithm (to load any kept checkpoint) and
    gradient probes."""

    def __init__(self, config: Config, path: Path | None = None,
                 ctx: RunContext | None = None, backend: str | None = None) -> None:
        self.config, self.path = config, path
        self.ctx = ctx or build_context(config, backend=backend)
        self.data = self.ctx.data
        self.kind = config.algorithm.kind
        self.probe = Probe(self.ctx.model, self.ctx.layout)
        self._algo: Algorithm | None = None
        self.checkpoints = Checkpoints(path / "checkpoints") if path is not None else None
        if sum(len(v) for v in self.data.val_idx) == 0:
            raise UserError("influence scores are measured on the validation split, and this "
                            "run has none: set data.val_fraction > 0")

    @classmethod
    def open(cls, path: Path, overrides: list[str] | None = None,
             imports: list[str] | None = None) -> ScoredRun:
        """A finished run directory; ``overrides`` may change ``influence.*`` keys only."""
        from fedweave.plugins import load_config

        if not (path / "config.yaml").is_file():
            raise UserError(f"{path}: not a run directory (no config.yaml)")
        bad = [o for o in overrides or [] if not o.strip().startswith("influence.")]
        if bad:
            raise UserError(f"--set {bad[0]}: scoring a finished run may change influence.* "
                            "keys only (other keys would describe another run)")
        config = load_config(path / "config.yaml", list(overrides or []), imports or [])
        backend = None
        summary = path / "summary.json"
        if summary.is_file():
            backend = json.loads(summary.read_text()).get("backend")
        else:
            raise UserError(f"{path}: the run has not finished (no summary.json); resume it "
                            f"first (fedweave run --resume {path})")
        return cls(config, path, backend=backend)

    # ------------------------------------------------------------------ models
    @property
    def algorithm(self) -> Algorithm:
        if self._algo is None:
            from fedweave.runner import build_algorithm

            self._algo = build_algorithm(self.ctx)
        return self._algo

    def rounds(self) -> list[int]:
        return self.checkpoints.rounds() if self.checkpoints is not None else []

    def models_at(self, round_done: int) -> tuple[torch.Tensor, Buffers]:
        """``params[M, P]`` and buffers of the evaluated models after ``round_done`` rounds."""
        if self.checkpoints is None:
            raise UserError("this run has no run directory to read checkpoints from")
        tensors, _ = self.checkpoints.load_round(round_done)
        self.algorithm.load_state(unflatten(tensors))
        params, buffers, _ = self.algorithm.models()
        return params.detach(), buffers

    def final_models(self) -> tuple[torch.Tensor, Buffers]:
        rounds = self.rounds()
        if not rounds:
            raise UserError(f"{self.path}: no checkpoint to score (output.checkpoint_every "
                            "was 0?)")
        return self.models_at(rounds[-1])

    def row(self, node: int) -> int:
        """Which evaluated model scores node ``node``'s samples."""
        return node if self.kind == "decentralized" else 0

    def model_of(self, params: torch.Tensor, buffers: Buffers, node: int
                 ) -> tuple[torch.Tensor, Buffers]:
        r = self.row(node)
        return params[r], select_buffers(buffers, r)

    # ------------------------------------------------------------------ data
    def train(self, node: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Node ``node``'s training inputs (as training saw them: input noise included,
        no augmentation) and labels."""
        return self.data.gather(self.data.train_idx[node].to(self.data.x.device))

    def validation(self, node: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation samples node ``node``'s scores are measured on (``None``: the union
        of every node's split)."""
        if node is not None and self.config.influence.validation == "node":
            idx = self.data.val_idx[node]
            if len(idx) == 0:
                raise UserError(f"influence.validation=node: node {node} has no validation "
                                "samples; raise data.val_fraction or use validation=global")
        else:
            idx = self.data.union_val()
        idx = idx.to(self.data.x.device)
        return self.data.features(self.data.x[idx]), self.data.y[idx]

    def shared_validation(self) -> bool:
        """True when every node's validation gradient at one model is the same vector."""
        return self.config.influence.validation == "global" or self.data.nodes == 1

    def validation_loss(self, params: torch.Tensor, buffers: Buffers) -> float:
        """The loss LOO changes: the mean over evaluated models of each one's validation loss
        (its node's split or the union; one global model is measured on the union)."""
        per_node = self.kind == "decentralized"
        losses = []
        for m in range(params.shape[0]):
            x, y = self.validation(m if per_node else None)
            b = select_buffers(buffers, m)
            losses.append(self.probe.losses(params[m], b, x, y).double().mean())
        return float(torch.stack(losses).mean())

    def with_data(self, data: FederatedData) -> RunContext:
        return self.ctx.with_data(data)

    def replace_seed(self, seed: int) -> FederatedData:
        """The same partition and corruption, another batch-order seed."""
        return dataclasses.replace(self.data, seed=seed)
