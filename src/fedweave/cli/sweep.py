"""``fedweave sweep``: a grid of runs × seeds in one sweep folder, one line per finished
point, ``sweep.csv`` and a table of mean ± std over seeds (``fedweave.workflows.sweep``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fedweave.cli.common import ImportOpt, SetOpt, app, console, fail
from fedweave.errors import UserError


def _pm(value: tuple[float, float] | None, spec: str = ".4f") -> str:
    if value is None:
        return "–"
    mean, std = value
    return f"{mean:{spec}} ± {std:{spec}}"


@app.command("sweep")
def sweep_cmd(
    config: Annotated[Path, typer.Argument(help="base config")],
    grid: Annotated[list[str], typer.Option("--grid", "-g",
                                             help="dotted.key=v1,v2,... (repeatable)")],
    set_: SetOpt = None,
    seeds: Annotated[int | None, typer.Option(
        "--seeds", min=1, help="run every point with N seeds: seed, seed+1, ...")] = None,
    jobs: Annotated[int, typer.Option(
        "--jobs", "-j", min=1, help="points run at the same time (subprocesses)")] = 1,
    out: Annotated[Path | None, typer.Option(
        "--out", help="the sweep folder (default <output.dir>/<name>-sweep); a re-run skips "
                      "its finished points")] = None,
    imports: ImportOpt = None,
) -> None:
    """Run the grid (cartesian product × seeds); every point is validated first."""
    from fedweave.workflows import sweep as sw

    overrides, names = list(set_ or []), list(imports or [])
    try:
        axes = sw.parse_grid(grid)
        points = sw.plan(config, axes, seeds, overrides, names)
        folder = sw.sweep_folder(config, out, overrides, names)
        lock = sw.open_sweep(folder, sw._manifest(config, axes, points, overrides))
    except UserError as exc:
        fail(str(exc), 2)
        return
    console.print(f"sweep folder: {folder} ({len(points)} runs, {jobs} at a time)",
                  highlight=False, soft_wrap=True, markup=False)

    def report(o: sw.Outcome, i: int, n: int) -> None:
        seed = f" seed {o.point.seed}" if o.point.seed is not None else ""
        head = f"[{i}/{n}] {o.point.label}{seed}: "
        if o.status in ("finished", "skipped"):
            f, b = o.summary.get("final", {}), o.summary.get("best", {})
            text = f"test acc {f.get('test_acc', float('nan')):.4f}"
            if "val_acc" in b:
                text += f", best val {b['val_acc']:.4f} (round {b.get('round')})"
            ttt = o.summary.get("time_to_target")
            if isinstance(ttt, dict):
                text += f", target at {ttt['sim_s']:.1f} sim s (round {ttt['update']})"
            elif "time_to_target" in o.summary:
                text += ", target not reached"
            text += f", {o.summary.get('wall_s', 0):.1f} s"
            text += " (finished before, skipped)" if o.status == "skipped" else ""
        else:
            text = f"{o.status}: {o.message}"
        console.print(head + text + f" → {o.point.dir}", highlight=False, soft_wrap=True,
                      markup=False)

    try:
        outcomes = sw.execute(folder, points, config, names, jobs, report)
    except KeyboardInterrupt:
        console.print("sweep interrupted; run the same command again to continue",
                      highlight=False)
        raise typer.Exit(130) from None
    finally:
        lock.release()
    keys = list(axes)
    rows = sw.csv_rows(outcomes, keys)
    path = sw.write_csv(folder, rows, keys)
    table = Table(title=f"sweep {folder}")
    groups = sw.grouped(rows)
    targeted = any(g["reached"][1] for g in groups)
    personal = any(g["final_personal_test_acc"] is not None for g in groups)
    columns = ["point", "runs", "test acc", *(("personal test acc",) if personal else ()),
               "best val acc", "test at best", "wall s"]
    if targeted:  # the number reference system 002 compares: time to the target accuracy
        columns[2:2] = ["time to target (sim s)", "round at target", "reached"]
    for col in columns:
        table.add_column(col)
    for g in groups:
        ttt = [_pm(g["ttt_sim_s"], ".1f"), _pm(g["ttt_round"], ".1f"),
               "{}/{}".format(*g["reached"])] if targeted else []
        table.add_row(g["point"], f"{g['finished']}/{g['runs']}", *ttt,
                      _pm(g["final_test_acc"]),
                      *((_pm(g["final_personal_test_acc"]),) if personal else ()),
                      _pm(g["best_val_acc"]), _pm(g["best_test_acc"]), _pm(g["wall_s"], ".1f"))
    Console(width=None if Console().is_terminal else 160).print(table)
    console.print(f"sweep.csv → {path}; report: fedweave report {folder}", highlight=False,
                  soft_wrap=True, markup=False)
    failed = [o for o in outcomes if o.status == "failed"]
    interrupted = any(o.status == "interrupted" for o in outcomes)
    if interrupted:
        raise typer.Exit(130)
    if failed:
        raise typer.Exit(1)
