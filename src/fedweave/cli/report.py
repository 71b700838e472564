"""``fedweave report``: plots and an HTML page of one or more runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedweave.cli.common import app, console, fail
from fedweave.cli.outputs import output_folder
from fedweave.errors import UserError


@app.command("report")
def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(
        help="run directories, sweep folders, fedweave prune / distill directories")],
    out: Annotated[Path, typer.Option(
        "--out", help="folder for plots + HTML (the run directories are only read)")
    ] = Path("report"),
) -> None:
    """Plots and an HTML page; several runs overlay in one figure."""
    from fedweave.algorithms.base import ALGORITHMS
    from fedweave.records.report import write_report

    ALGORITHMS.load_all()  # the built-in algorithms' kinds (round, epoch, server update)
    try:
        output_folder(out, "--out")
        page = write_report(run_dirs, out)
    except UserError as exc:
        fail(str(exc), 2)
        return
    console.print(f"report → {page}")
