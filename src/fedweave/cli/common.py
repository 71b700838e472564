"""What every command shares: the app, the error console, option types, one-line failures."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=True, no_args_is_help=False,
                  help="fedweave: federated, decentralized and one-shot learning research.")
console = Console(stderr=True)


def main() -> None:
    """Console-script entry point: unexpected errors exit 1 with the traceback (in a rank of
    a multi-process run: one line naming the rank, the traceback kept in a file). The
    commands are registered on ``app`` by importing ``fedweave.cli``."""
    from fedweave.distributed import report_rank_crash, under_torchrun
    from fedweave.errors import UserError

    try:
        app()
    except UserError as exc:  # raised outside a command's own handling
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as exc:
        if under_torchrun():
            report_rank_crash(exc)
        raise


def _version(value: bool) -> None:
    if value:
        from fedweave.version import __version__

        typer.echo(f"fedweave {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="print the version and exit")] = False,
    trust_plugins: Annotated[bool, typer.Option(
        "--trust-plugins", help="import the plugins a config lists (its plugins: key; e.g. a "
                                "run directory's config.yaml), printing each; without it a "
                                "listed plugin must be named with --import")] = False,
) -> None:
    """fedweave: federated, decentralized and one-shot learning research."""
    if trust_plugins:
        from fedweave.trust import trust_listed_plugins

        trust_listed_plugins()

SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s",
                                                   help="override: dotted.key=value; a mapping "
                                                        "merges into its section, key!=value "
                                                        "replaces it whole")]
ImportOpt = Annotated[list[str] | None, typer.Option(
    "--import", help="plugin module (dotted name or .py file) that registers models, datasets, "
                     "algorithms, ... (repeatable)")]


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` (one line, markup-free) and exit with ``code``."""
    console.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
