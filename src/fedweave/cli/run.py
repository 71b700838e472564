"""``fedweave run``: one experiment (or ``--procs N`` local ranks of it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from fedweave.cli.common import ImportOpt, SetOpt, app, console, fail
from fedweave.errors import UserError


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
        from fedweave.parallel.launch import launch_local, preflight

        try:  # validate once, before any rank starts (one line, not one per rank)
            if resume is None:
                preflight(load_config(config, overrides, imports or []))
            elif not (resume / "config.yaml").is_file():
                raise UserError(f"--resume {resume}: not a run directory (no config.yaml)")
        except UserError as exc:
            fail(str(exc), 2)
        args = ["run", *([str(config)] if config is not None else [])]
        for item in set_ or []:
            args += ["--set", item]
        for name in imports or []:
            args += ["--import", name]
        if out is not None:
            args += ["--out", str(out)]
        if resume is not None:
            args += ["--resume", str(resume)]
        code = launch_local(procs, args)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)  # the ranks are gone: skip torch's teardown (seconds on a busy machine)
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
        fail(str(exc), 2)
        return
    if writer:
        final = result.summary["final"]
        console.print(f"test accuracy {final['test_acc']:.4f}  test loss "
                      f"{final['test_loss']:.4f}  ({result.summary['wall_s']:.1f} s)  →  "
                      f"{result.run_dir}", highlight=False)
    if under_torchrun():
        from fedweave.comm.process_group import finish_process

        finish_process(0)
