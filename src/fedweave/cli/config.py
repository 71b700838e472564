"""``fedweave config show|docs``: the config reference, alone or beside a resolved config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fedweave.cli.common import ImportOpt, SetOpt, app, fail
from fedweave.cli.outputs import output_file
from fedweave.errors import UserError

config_app = typer.Typer(help="The config reference: show a resolved config, write the docs.")
app.add_typer(config_app, name="config")


def _value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@config_app.command("show")
def config_show(
    config: Annotated[Path | None, typer.Argument(help="YAML/TOML config; none = default")] = None,
    set_: SetOpt = None,
    imports: ImportOpt = None,
    changed: Annotated[bool, typer.Option("--changed", help="only keys that differ from "
                                                            "their default")] = False,
) -> None:
    """Every key of the resolved config: value, default, type, unit and description
    (values that differ from the default in bold)."""
    from fedweave.config.reference import resolved_keys
    from fedweave.plugins import load_config

    try:
        cfg = load_config(config, list(set_ or []), imports or [])
    except UserError as exc:
        fail(str(exc), 2)
        return
    table = Table(title=f"config {config or '(built-in default)'}: algorithm.name="
                        f"{cfg.algorithm.name}", show_lines=False)
    for col in ("key", "value", "default", "type", "unit", "description"):
        table.add_column(col, overflow="fold")
    derived = f"{cfg.algorithm.name}-{cfg.data.dataset}"
    for key, value in resolved_keys(cfg):
        shown, default = _value(value), _value(key.default)
        if key.path == "name" and shown == derived:
            default = shown  # the derived name is the default
        differs = shown != default
        if changed and not differs:
            continue
        style = "bold" if differs else ""
        table.add_row(key.path, escape(shown), escape(default), escape(key.type),
                      key.unit or "–", escape(key.description), style=style)
    Console(width=None if Console().is_terminal else 200).print(table)


@config_app.command("docs")
def config_docs(
    out: Annotated[Path | None, typer.Option("--out", help="write here (default: stdout)")
                   ] = None,
    imports: ImportOpt = None,
) -> None:
    """The reference of every key as Markdown (the repository keeps it as docs/config.md)."""
    from fedweave.config.reference import markdown
    from fedweave.plugins import import_plugins

    try:
        if out is not None:
            output_file(out, "--out")
        import_plugins(imports or [])
    except UserError as exc:
        fail(str(exc), 2)
    text = markdown()
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        typer.echo(f"config reference → {out}", err=True)
