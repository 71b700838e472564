"""``fedweave hosts``: torchrun commands for reference system 001's hosts.json."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedweave.cli.common import app, fail
from fedweave.errors import UserError


@app.command("hosts")
def hosts_cmd(
    hosts: Annotated[Path, typer.Argument(
        help="reference system 001 hosts.json (name, addr, port)")],
    config: Annotated[Path, typer.Argument(help="the experiment's config, same path on all")],
    port: Annotated[int | None, typer.Option(
        "--port", min=1, max=65535,
        help="rendezvous port on the first host [default: the first entry's port]")] = None,
) -> None:
    """Print the torchrun command to start on each host of a hosts.json: entry i (file order)
    is rank i, one process per host, the rendezvous store on the first entry's addr:port
    (static rendezvous, so the ranks follow the file). With ``data.nodes`` = number of hosts
    host i computes node i. torch.distributed listens on that one port only: a warning names
    the other entries' ports, which are not used."""
    from fedweave.distributed.launcher import torchrun_commands, unused_ports

    try:
        commands = torchrun_commands(hosts, str(config), port)
        warning = unused_ports(hosts, port)
    except UserError as exc:
        fail(str(exc), 2)
        return
    if warning:
        typer.echo(f"warning: {warning}", err=True)
    for host, command in commands:
        typer.echo(f"# on {host}\n{command}")
