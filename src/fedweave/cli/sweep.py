"""``fedweave sweep``: a grid of runs and one summary table."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedweave.cli.common import SetOpt, app, fail
from fedweave.errors import UserError


@app.command("sweep")
def sweep_cmd(
    config: Annotated[Path, typer.Argument(help="base config")],
    grid: Annotated[list[str], typer.Option("--grid", "-g",
                                             help="dotted.key=v1,v2,... (repeatable)")],
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out")] = None,
) -> None:
    """Run the grid of configs (cartesian product) and print one summary table."""
    from fedweave.plugins import load_config
    from fedweave.runner import run

    axes = []
    for g in grid:
        if "=" not in g:
            fail(f"--grid {g!r}: expected dotted.key=v1,v2", 2)
        key, values = g.split("=", 1)
        axes.append([f"{key}={v}" for v in values.split(",")])
    table = Table(title="sweep")
    for a in axes:
        table.add_column(a[0].split("=")[0])
    for col in ("test_acc", "test_loss", "wall_s", "run dir"):
        table.add_column(col)
    rows = []
    try:
        for combo in itertools.product(*axes):
            overrides = list(set_ or []) + list(combo)
            if out is not None:
                overrides.append(f"output.dir={out}")
            cfg = load_config(config, overrides)
            cfg.name = cfg.name + "-" + "-".join(c.split("=")[1] for c in combo)
            res = run(cfg)
            f = res.summary["final"]
            table.add_row(*[c.split("=", 1)[1] for c in combo], f"{f['test_acc']:.4f}",
                          f"{f['test_loss']:.4f}", f"{res.summary['wall_s']:.1f}",
                          str(res.run_dir))
            rows.append({"overrides": combo, "final": f, "run_dir": str(res.run_dir)})
    except UserError as exc:
        fail(str(exc), 2)
    Console().print(table)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "sweep.json").write_text(json.dumps(rows, indent=2))
