"""``fedweave distill``: one-shot federated learning by data-free distillation (teachers →
synthesize → student, plus the real-data and noise baselines)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fedweave.cli.common import ImportOpt, SetOpt, app, console, fail
from fedweave.errors import UserError


def _config(path: Path, overrides: list[str], imports: list[str]) -> Any:
    """The config with ``algorithm.name: local`` (the teachers) unless it names another."""
    from fedweave.config import load_raw
    from fedweave.plugins import load_config

    raw = load_raw(path, overrides)
    algorithm = raw.get("algorithm") or {}
    if isinstance(algorithm, dict) and algorithm.get("name", "local") != "local":
        raise UserError(f"algorithm.name={algorithm['name']}: fedweave distill trains one "
                        "teacher per client with algorithm.name=local; remove the algorithm "
                        "section")
    return load_config(path, [*overrides, "algorithm.name=local"], imports)


@app.command("distill")
def distill_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML/TOML config with a distill "
                                                  "section")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="parent folder of run dirs")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue a distill run "
                                                "dir")] = None,
    teachers: Annotated[Path | None, typer.Option(
        "--teachers", help="reuse the trained teachers of this distill run dir")] = None,
    imports: ImportOpt = None,
) -> None:
    """One-shot FL by data-free distillation: teachers → synthesize → student (+ baselines).

    Prints the run directory first, then each stage (the teachers' rounds as in ``fedweave
    run``, synthesis batches, student epochs). Ctrl-C or SIGTERM stops with the line that
    resumes it (exit 130 / 143)."""
    from fedweave.cli.progress import PipelineProgress, interruptible
    from fedweave.plugins import import_plugins
    from fedweave.workflows.distill import distill

    def log(message: str) -> None:
        console.print(message, highlight=False)

    try:
        import_plugins(imports or [])
        if resume is not None:
            if config is not None or set_:
                raise UserError("--resume continues a run with its own config.yaml: give no "
                                "CONFIG and no --set")
            progress = PipelineProgress(console, "fedweave distill")
            with interruptible(progress):
                result = distill(resume=resume, log=log, listener=progress,
                                 callbacks=progress.callbacks)
        else:
            if config is None:
                raise UserError("fedweave distill needs a CONFIG (e.g. configs/oneshot-fmnist."
                                "yaml) or --resume RUN_DIR")
            overrides = list(set_ or [])
            if out is not None:
                overrides.append(f"output.dir={out}")
            cfg = _config(config, overrides, list(imports or []))
            progress = PipelineProgress(console, "fedweave distill",
                                        show_rounds=cfg.output.progress)
            with interruptible(progress):
                result = distill(cfg, teachers_from=teachers, log=log, listener=progress,
                                 callbacks=progress.callbacks)
    except UserError as exc:
        fail(str(exc), 2)
        return
    s = result.summary
    teachers_acc = ", ".join(f"{a:.4f}" for a in s["teachers"]["test_acc"])
    lines = [f"teachers test acc   {teachers_acc}",
             f"ensemble test acc   {s['ensemble']['test_acc']:.4f}",
             f"student test acc    {s['student']['test_acc']:.4f}  (epoch "
             f"{s['student']['epoch']}, selected by val_acc)"]
    for name, b in s["baselines"].items():
        lines.append(f"baseline {name:<10} {b['test_acc']:.4f}")
    console.print("\n".join(lines) + f"\n→  {result.run_dir}", highlight=False)
