"""Centralized reference: one model trained on the union of all nodes' training shards with the
same optimizer and batch size (the "single node" row of every comparison)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar, Literal

import torch

from fedweave.algorithms.base import Algorithm, RoundResult, register_algorithm
from fedweave.config import AlgorithmConfig
from fedweave.context import RunContext
from fedweave.core.population import Buffers, stack_buffers
from fedweave.core.state import State, section


class CentralizedConfig(AlgorithmConfig):
    name: Literal["centralized"] = "centralized"
    kind: ClassVar[Literal["federated", "decentralized", "async", "centralized"]] = (
        "centralized")


@register_algorithm("centralized", CentralizedConfig)
class Centralized(Algorithm):
    """Round r = ``local_epochs`` passes of minibatch SGD over ∪_i D_i (node 0 of a
    one-node view of the data, so its batch stream matches a single FedAvg client's)."""

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        data = dataclasses.replace(ctx.data, train_idx=[ctx.data.union_train()],
                                   val_idx=[ctx.data.union_val()])
        super().__init__(ctx.with_data(data), config)
        self.x = ctx.init_params.unsqueeze(0).clone()
        self.buffers = stack_buffers(ctx.init_buffers, 1)

    def round(self, r: int) -> RoundResult:
        local = self.ctx.trainer.train(torch.zeros(1, dtype=torch.int64), self.x, self.buffers,
                                       r, self.ctx.lr(r))
        self.x, self.buffers = local.params, local.buffers
        return RoundResult(train_loss=float(local.loss[0]), train_acc=float(local.acc[0]))

    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        return self.x, self.buffers, ["global"]

    def state(self) -> State:
        return {"x": self.x, "buffers": self.buffers}

    def load_state(self, state: State) -> None:
        self.x = state["x"]
        self.buffers = section(state, "buffers")
