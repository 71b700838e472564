"""The ``fedweave`` command line (a contract). One module per command; a new
command is a new module here, imported below.

Exit codes: 0 success, 2 bad input (config, missing data, impossible partition, divergence,
a busy run directory), 1 an unexpected failure during the run.
"""

from __future__ import annotations

import sys

from fedweave.training.threads import quiet_openmp

quiet_openmp()  # before anything imports torch: OpenMP reads OMP_WAIT_POLICY once, at load

# ruff: noqa: E402  (the commands import torch)

from rich.markup import escape

from fedweave.cli import (  # noqa: F401  (register commands)
    config,
    data,
    distill,
    export,
    hosts,
    influence,
    prune,
    report,
    run,
    sweep,
)
from fedweave.cli.common import app, console
from fedweave.distributed import report_rank_crash, under_torchrun
from fedweave.errors import UserError

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point: unexpected errors exit 1 with the traceback (in a rank of
    a multi-process run: one line naming the rank, the traceback kept in a file)."""
    try:
        app()
    except UserError as exc:  # raised outside a command's own handling
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        if under_torchrun():
            report_rank_crash(exc)
        raise
