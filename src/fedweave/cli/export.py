"""``fedweave export``: a run's trained model(s) as a plain PyTorch state_dict (safetensors)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedweave.cli.common import app, console, fail
from fedweave.cli.outputs import output_file
from fedweave.errors import UserError


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="a run directory")],
    round_: Annotated[int | None, typer.Option("--round", min=1,
                                               help="the checkpoint of this round")] = None,
    best: Annotated[bool, typer.Option("--best", help="the best round by validation "
                                                      "accuracy (needs its checkpoint)")] = False,
    node: Annotated[list[str] | None, typer.Option(
        "--node", help="which model: a peer id, cluster<k> (repeatable; default all)")] = None,
    out: Annotated[Path, typer.Option("--out", help="file to write (several models: "
                                                    "<stem>-<label>.safetensors)")
                   ] = Path("model.safetensors"),
) -> None:
    """Write the global model (or chosen nodes) as a state_dict for
    ``model.load_state_dict(safetensors.torch.load_file(path))``."""
    from fedweave.export import write_export

    try:
        output_file(out, "--out")
        paths = write_export(run_dir, out, round_, best, list(node or []) or None)
    except UserError as exc:
        fail(str(exc), 2)
        return
    for path in paths:
        console.print(f"model → {path}", highlight=False, soft_wrap=True, markup=False)
