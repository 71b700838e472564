"""Execution engines: *local* (one process, the default) and *distributed* (torch.distributed,
launched by torchrun). ``distribute`` adapts a run context to the engine in use."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedweave.algorithms.base import RunContext


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def pin_local_device() -> None:
    """Under torchrun with CUDA, make ``cuda`` mean this rank's GPU (``cuda:<LOCAL_RANK>``)
    before any tensor is created, so data never lands on GPU 0 of every rank first."""
    if under_torchrun() and "LOCAL_RANK" in os.environ:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 1:
            torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())


pin_local_device()


def distribute(ctx: RunContext) -> RunContext:
    """Return ``ctx`` unchanged for the local engine; under torch.distributed, a context whose
    local training and gradients are split across ranks."""
    if ctx.config.engine.name == "local" and not under_torchrun():
        return ctx
    from fedweave.engine.distributed import make_distributed

    return make_distributed(ctx)


def is_writer() -> bool:
    """Only rank 0 writes the run directory."""
    return int(os.environ.get("RANK", "0")) == 0
