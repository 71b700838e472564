"""Processes of a run: whether this one runs under torchrun, which rank writes, device pinning.
The process group itself is ``fedweave.distributed.process_group``; which decentralized nodes a rank
holds is ``fedweave.distributed.placement``."""

from __future__ import annotations

import os
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

LAUNCHED_ENV = "FEDWEAVE_LAUNCHER_PID"
"""Set in every rank that ``fedweave run --procs`` starts (``fedweave.distributed.launcher``): a
SIGTERM then comes from the launcher, which reports the cause itself, so the rank exits 1
without a line of its own (``fedweave.distributed.process_group``)."""


FAILURE_ENV = "FEDWEAVE_FAILURE_DIR"
"""Set by the launcher: a rank that notices a lost peer writes its one line to
``<dir>/rank<r>.txt`` instead of stderr; the launcher prints the one line of the failure."""


def report_rank_crash(exc: BaseException) -> NoReturn:
    """A rank of a multi-process run failed with an unexpected exception (a bug, not bad
    input): its traceback goes to a file, and one line — the rank, the exception and that
    file — to the launcher (``<FAILURE_ENV>/rank<r>.crash.txt``, which it prints in place of
    its own line) or, under torchrun, to stderr; the process exits 1."""
    rank = os.environ.get("RANK", "?")
    where = Path(tempfile.gettempdir()) / f"fedweave-rank{rank}-{os.getpid()}-traceback.txt"
    detail = (str(exc).strip().splitlines() or [""])[0][:160]
    try:
        where.write_text("".join(traceback.format_exception(exc)))
        kept = f"traceback in {where}"
    except OSError:
        kept = "traceback not kept: the temporary folder is not writable"
    msg = (f"error: distributed run stopped: rank {rank} failed with {type(exc).__name__}: "
           f"{detail} ({kept}); the other ranks were stopped")
    try:
        report = os.environ.get(FAILURE_ENV)
        if report:
            (Path(report) / f"rank{rank}.crash.txt").write_text(msg)
        else:
            os.write(2, f"\n{msg}\n".encode())
    finally:
        os._exit(1)


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
