"""``fedweave run``: one experiment (or ``--procs N`` local ranks of it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from fedweave.cli.common import ImportOpt, SetOpt, app, console, fail, main
from fedweave.errors import UserError


def max_procs() -> int:
    """Local processes ``--procs`` may start: four per core (at least 8), at most 256."""
    return min(256, max(8, 4 * (os.cpu_count() or 1)))


def _resume_hint(run_dir: Path | None) -> str:
    return f"fedweave run --resume {run_dir}" if run_dir is not None else "(no run directory)"


def _latest_round(run_dir: Path | None) -> int | None:
    """The round of the newest checkpoint (without verifying it), or None."""
    import json

    if run_dir is None:
        return None
    try:
        return int(json.loads((run_dir / "checkpoints" / "latest.json").read_text())["round"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _preflight(config: Any) -> None:
    """What every rank would check first, checked once before launching (one line, not one
    per rank): the device, the size limits, ``output.dir`` and the dataset's presence."""
    from fedweave.config.limits import check_limits
    from fedweave.data.sources.base import dataset_status, missing
    from fedweave.records.rundir import prepare_output
    from fedweave.training.select import resolve_device

    resolve_device(config.engine.device)
    check_limits(config)
    prepare_output(config.output.dir)
    present, where = dataset_status(config.data.dataset, config.data.root)
    if not present and not config.data.download:
        raise missing(config.data.dataset, [where])


def _launch(procs: int, config: Path | None, set_: list[str], imports: list[str],
            out: Path | None, resume: Path | None, run_dir: Path | None,
            overrides: list[str]) -> None:
    from fedweave.distributed.launcher import forkable_parent, launch_local, recorded_timeout

    forkable_parent()  # before anything imports torch (fedweave.plugins does)
    from fedweave.plugins import load_config

    try:  # validate once, before any rank starts (one line, not one per rank)
        if resume is None:
            cfg = load_config(config, overrides, imports)
            _preflight(cfg)
            timeout_s = cfg.launcher.timeout_s
        elif not (resume / "config.yaml").is_file():
            raise UserError(f"--resume {resume}: not a run directory (no config.yaml)")
        else:
            timeout_s = recorded_timeout(resume / "config.yaml")
    except UserError as exc:
        fail(str(exc), 2)
    args = ["run", *([str(config)] if config is not None else [])]
    for item in set_:
        args += ["--set", item]
    for name in imports:
        args += ["--import", name]
    if out is not None:
        args += ["--out", str(out)]
    if resume is not None:
        args += ["--resume", str(resume)]
    if run_dir is not None:
        args += ["--dir", str(run_dir)]
    code = launch_local(procs, args, timeout_s, main)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the ranks are gone: skip torch's teardown (seconds on a busy machine)


@app.command("run")
def run_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML/TOML config; none = default")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="parent folder of run dirs")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="continue a run directory (--set rounds=N extends it)")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--dir", help="the run directory itself, instead of <out>/<name>-<timestamp>")] = None,
    imports: ImportOpt = None,
    procs: Annotated[int | None, typer.Option(
        "--procs", min=1, help="start N local processes running the distributed engine")] = None,
) -> None:
    """Run an experiment (the default: FedAvg on the built-in digits data).

    Prints the run directory first, then one line per evaluated round (a live bar on a
    terminal). Ctrl-C or SIGTERM stops after the current round with a checkpoint (exit 130 /
    143); a second one stops at once.
    """
    from fedweave.distributed import is_writer, under_torchrun

    if procs is not None and procs > max_procs():
        fail(f"--procs {procs}: more local processes than this machine can run ({os.cpu_count()}"
             f" cores; at most {max_procs()}: four per core, 256 in all); use torchrun across "
             "machines for more ranks", 2)
    overrides = list(set_ or [])
    if out is not None and resume is None:
        overrides.append(f"output.dir={out}")
    if procs is not None and procs > 1 and not under_torchrun():
        _launch(procs, config, list(set_ or []), list(imports or []), out, resume, run_dir,
                overrides)
    from fedweave.plugins import load_config  # imports torch: after _launch prepared it

    writer = is_writer()
    from fedweave.cli.progress import TerminalProgress
    from fedweave.interrupt import Interrupted, StopOnSignal
    from fedweave.runner import run

    progress: TerminalProgress | None = None
    try:
        kwargs: dict[str, Any] = {"imports": list(imports or [])}
        if resume is not None:
            if run_dir is not None:
                raise UserError("--dir names a new run directory; --resume continues one: "
                                "give only one of them")
            kwargs.update(resume=resume, overrides=list(set_ or []))
            show = True
        else:
            cfg = load_config(config, overrides, imports or [])
            kwargs.update(config=cfg, source=config, run_dir=run_dir)
            show = cfg.output.progress
        if writer:
            progress = TerminalProgress(console, show_rounds=show)
            stop = StopOnSignal(lambda name: progress.say(  # type: ignore[union-attr]
                f"{name}: stopping after this round (again to stop at once)"))
            kwargs["callbacks"] = [progress, stop]
        result = run(**kwargs)
    except UserError as exc:
        if not writer:  # every rank meets the same input error: rank 0 says it once
            sys.stderr.flush()
            os._exit(2)
        fail(str(exc), 2)
        return
    except Interrupted as exc:
        if exc.checkpointed:
            console.print(f"interrupted after round {exc.completed} — resume with: "
                          f"{_resume_hint(exc.run_dir)}", highlight=False, soft_wrap=True,
                          markup=False)
        else:
            console.print(f"interrupted after round {exc.completed}; no checkpoint "
                          "(output.checkpoint_every=0 or no run directory)", highlight=False,
                          soft_wrap=True, markup=False)
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        where = progress.run_dir if progress is not None else None
        done = _latest_round(where)
        line = "interrupted during a round"
        if done is not None:
            line += f"; the last checkpoint is of round {done} — resume with: " \
                    f"{_resume_hint(where)}"
        console.print(line, highlight=False, soft_wrap=True, markup=False)
        raise typer.Exit(130) from None
    if writer:
        final = result.summary["final"]
        best = result.summary.get("best", {})
        line = f"test accuracy {final['test_acc']:.4f}  test loss {final['test_loss']:.4f}"
        if "personal_test_acc" in final:
            line += (f"  personal test accuracy {final['personal_test_acc']:.4f} (clients "
                     f"{final['personal_test_acc_min']:.4f}–{final['personal_test_acc_max']:.4f})")
        head = result.summary.get("headline", {})
        if head.get("metric", "test_acc") != "test_acc" and head.get("value") is not None:
            line = f"{head['label']} {head['value']:.4f}  models on the global test set: {line}"
        if best.get("selected_by") == "val_acc":
            line += (f"  (best by validation: round {int(best['round'])}, val "
                     f"{best['val_acc']:.4f}, test {best['test_acc']:.4f})")
        line += f"  {result.summary['wall_s']:.1f} s  →  {result.run_dir}"
        console.print(line, highlight=False, soft_wrap=True, markup=False)
    if under_torchrun():
        from fedweave.distributed.process_group import finish_process

        finish_process(0)
