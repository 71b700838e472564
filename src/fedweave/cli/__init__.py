"""The ``fedweave`` command line (a contract). One module per command; a new
command is a new module here, imported below.

Exit codes: 0 success, 2 bad input (config, missing data, impossible partition, divergence,
a busy run directory), 1 an unexpected failure during the run.
"""

from __future__ import annotations

from fedweave.training.threads import quiet_openmp

quiet_openmp()  # before anything imports torch: OpenMP reads OMP_WAIT_POLICY once, at load

# ruff: noqa: E402  (the commands import torch)

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
from fedweave.cli.common import app, main

__all__ = ["app", "main"]
