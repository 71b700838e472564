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
    per_client: Annotated[Path | None, typer.Option(
        "--per-client", help="instead of models: write one CSV per client (federated, split "
        "from clients.csv) or per node (decentralized) into this folder")] = None,
) -> None:
    """Write the global model (or chosen nodes) as a state_dict for
    ``model.load_state_dict(safetensors.torch.load_file(path))``; with --per-client, the
    records as one CSV per client or node instead."""
    from fedweave.export import write_export, write_per_client

    try:
        output_file(out, "--out")
        if per_client is not None:
            written = write_per_client(run_dir, per_client)
            console.print(f"{len(written)} per-client CSV files → {per_client}",
                          highlight=False, soft_wrap=True, markup=False)
            return
        paths = write_export(run_dir, out, round_, best, list(node or []) or None)
    except UserError as exc:
        fail(str(exc), 2)
        return
    for path in paths:
        console.print(f"model → {path}", highlight=False, soft_wrap=True, markup=False)
