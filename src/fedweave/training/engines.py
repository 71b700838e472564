"""Choosing the gradient engine for a workload (``engine.backend``)."""

from __future__ import annotations

import torch
from torch import nn

from fedweave.config import EngineConfig
from fedweave.data.federated import FederatedData
from fedweave.population import ParamLayout
from fedweave.training.local import GradientEngine, LoopEngine


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_gradient_engine(cfg: EngineConfig, model: nn.Module, layout: ParamLayout,
                         data: FederatedData, seed: int) -> GradientEngine:
    return LoopEngine(model, layout, data, seed)
