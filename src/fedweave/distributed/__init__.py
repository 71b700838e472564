"""Processes of a run: whether this one runs under torchrun, which rank writes, device pinning.
The process group itself is ``fedweave.distributed.process_group``; which decentralized nodes a rank
holds is ``fedweave.distributed.placement``."""

from __future__ import annotations

import os

LAUNCHED_ENV = "FEDWEAVE_LAUNCHER_PID"
"""Set in every rank that ``fedweave run --procs`` starts (``fedweave.distributed.launcher``): a
SIGTERM then comes from the launcher, which reports the cause itself, so the rank exits 1
without a line of its own (``fedweave.distributed.process_group``)."""


FAILURE_ENV = "FEDWEAVE_FAILURE_DIR"
"""Set by the launcher: a rank that notices a lost peer writes its one line to
``<dir>/rank<r>.txt`` instead of stderr; the launcher prints the one line of the failure."""


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


def is_writer() -> bool:
    """Only rank 0 writes the run directory."""
    return int(os.environ.get("RANK", "0")) == 0
