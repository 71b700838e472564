"""The ``fedweave`` command line (DESIGN §4, a contract).

Exit codes: 0 success, 2 bad input (config, missing data, impossible partition, divergence),
1 an unexpected failure during the run.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedweave.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=False,
                  help="fedweave: federated, decentralized and one-shot learning research.")
data_app = typer.Typer(help="Datasets: list, show a partition, download.")
app.add_typer(data_app, name="data")
console = Console(stderr=True)

SetOpt = Annotated[list[str] | None, typer.Option("--set", "-s",
                                                   help="override: dotted.key=value")]
ImportOpt = Annotated[list[str] | None, typer.Option(
    "--import", help="plugin module (dotted name or .py file) that registers models, datasets, "
                     "algorithms, ... (repeatable)")]


def _fail(message: str, code: int) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _progress_printer(progress: Progress, task: Any):  # type: ignore[no-untyped-def]
    def update(r: int, total: int, row: dict[str, float]) -> None:
        progress.update(task, completed=r, total=total,
                        description=f"loss {row['train_loss']:.3f}  test acc "
                                    f"{row['test_acc']:.3f}")
    return update


def _run_with_progress(**kwargs: Any):  # type: ignore[no-untyped-def]
    from fedweave.runner import run

    with Progress(TextColumn("round {task.completed}/{task.total}"), BarColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                  transient=False) as progress:
        task = progress.add_task("starting", total=None)
        return run(progress=_progress_printer(progress, task), **kwargs)


@app.command("run")
def run_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML/TOML config; none = default")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="parent folder of run dirs")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue a run dir")] = None,
    imports: ImportOpt = None,
    procs: Annotated[int | None, typer.Option(
        "--procs", min=1, help="start N local processes running the distributed engine")] = None,
) -> None:
    """Run an experiment (the default: FedAvg on the built-in digits data)."""
    from fedweave.comm import is_writer, under_torchrun
    from fedweave.plugins import load_config

    overrides = list(set_ or [])
    if out is not None and resume is None:
        overrides.append(f"output.dir={out}")
    if procs is not None and procs > 1 and not under_torchrun():
        from fedweave.parallel.launch import launch_local

        try:  # validate once, before any rank starts (one line, not one per rank)
            if resume is None:
                load_config(config, overrides, imports or [])
            elif not (resume / "config.yaml").is_file():
                raise UserError(f"--resume {resume}: not a run directory (no config.yaml)")
        except UserError as exc:
            _fail(str(exc), 2)
        args = ["run", *([str(config)] if config is not None else [])]
        for item in set_ or []:
            args += ["--set", item]
        for name in imports or []:
            args += ["--import", name]
        if out is not None:
            args += ["--out", str(out)]
        if resume is not None:
            args += ["--resume", str(resume)]
        raise typer.Exit(launch_local(procs, args))
    writer = is_writer()
    try:
        kwargs: dict[str, Any] = {"imports": list(imports or [])}
        if resume is not None:
            kwargs.update(resume=resume, overrides=list(set_ or []))
        else:
            kwargs["config"] = load_config(config, overrides, imports or [])
        if writer:
            result = _run_with_progress(**kwargs)
        else:  # other ranks of a distributed run stay quiet
            from fedweave.runner import run

            result = run(**kwargs)
    except UserError as exc:
        _fail(str(exc), 2)
        return
    if writer:
        final = result.summary["final"]
        console.print(f"test accuracy {final['test_acc']:.4f}  test loss "
                      f"{final['test_loss']:.4f}  ({result.summary['wall_s']:.1f} s)  →  "
                      f"{result.run_dir}", highlight=False)
    if under_torchrun():
        from fedweave.comm.process_group import finish_process

        finish_process(0)


@app.command("hosts")
def hosts_cmd(
    hosts: Annotated[Path, typer.Argument(help="seed 001 hosts.json (name, addr, port)")],
    config: Annotated[Path, typer.Argument(help="the experiment's config, same path on all")],
    port: Annotated[int, typer.Option("--port", help="store port on the first host")] = 29400,
) -> None:
    """Print the torchrun command to start on each host of a hosts.json: entry i (file order)
    is rank i, one process per host, the store on the first host (static rendezvous, so the
    ranks follow the file). With ``data.nodes`` = number of hosts host i computes node i."""
    from fedweave.parallel.launch import torchrun_commands

    try:
        commands = torchrun_commands(hosts, str(config), port)
    except UserError as exc:
        _fail(str(exc), 2)
        return
    for host, command in commands:
        typer.echo(f"# on {host}\n{command}")


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
            _fail(f"--grid {g!r}: expected dotted.key=v1,v2", 2)
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
        _fail(str(exc), 2)
    Console().print(table)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "sweep.json").write_text(json.dumps(rows, indent=2))


@app.command("report")
def report_cmd(
    run_dirs: Annotated[list[Path], typer.Argument(help="one or more run directories")],
    out: Annotated[Path | None, typer.Option("--out", help="folder for plots + HTML")] = None,
) -> None:
    """Plots and an HTML page; several runs overlay in one figure."""
    from fedweave.records.report import write_report

    try:
        page = write_report(run_dirs, out)
    except UserError as exc:
        _fail(str(exc), 2)
        return
    console.print(f"report → {page}")


@data_app.command("list")
def data_list(root: Annotated[Path | None, typer.Option("--root")] = None) -> None:
    """Datasets, whether they are present, and where."""
    from fedweave.data.sources import DATASETS, dataset_status

    table = Table(title="datasets")
    table.add_column("name")
    table.add_column("present")
    table.add_column("path")
    for name in DATASETS.names():
        present, path = dataset_status(name, root)
        table.add_row(name, "yes" if present else "no", str(path))
    Console().print(table)


@data_app.command("download")
def data_download(name: str, root: Annotated[Path | None, typer.Option("--root")] = None
                  ) -> None:
    """Download a dataset (checksum-verified) into the data root."""
    from fedweave.data.download import download_dataset
    from fedweave.data.sources import default_root

    try:
        path = download_dataset(name, root or default_root())
    except UserError as exc:
        _fail(str(exc), 2)
        return
    console.print(f"{name} → {path}")


@data_app.command("show")
def data_show(
    config: Annotated[Path | None, typer.Argument(help="config whose data section to use")] = None,
    set_: SetOpt = None,
    out: Annotated[Path, typer.Option("--out", help="heatmap PNG")] = Path("partition.png"),
) -> None:
    """Per-node class counts of a partition (table + heatmap) and size statistics."""
    from fedweave.data.federated import build_federated_data
    from fedweave.plugins import load_config
    from fedweave.records.plots import plot_partition

    try:
        cfg = load_config(config, list(set_ or []))
        data = build_federated_data(cfg.data, cfg.seed)
    except UserError as exc:
        _fail(str(exc), 2)
        return
    counts = data.label_counts()
    table = Table(title=f"{cfg.data.dataset}: {cfg.data.partition} over {cfg.data.nodes} nodes")
    table.add_column("node")
    for c in range(counts.shape[1]):
        table.add_column(str(c), justify="right")
    table.add_column("total", justify="right")
    table.add_column("val", justify="right")
    for i, row in enumerate(counts.tolist()):
        table.add_row(str(i), *map(str, row), str(sum(row)), str(len(data.val_idx[i])))
    Console().print(table)
    sizes = counts.sum(1).double()
    console.print(f"samples per node: min {int(sizes.min())}  mean {sizes.mean():.1f}  "
                  f"max {int(sizes.max())}  std {sizes.std():.1f}; test set {len(data.test_y)}")
    plot_partition(counts, out)
    console.print(f"heatmap → {out}")


def main() -> None:
    """Console-script entry point: unexpected errors exit 1 with the traceback."""
    try:
        app()
    except UserError as exc:  # raised outside a command's own handling
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
