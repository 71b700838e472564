"""``fedweave prune CONFIG --scorer S --train-ratio R``: train on all data, score, prune each
node to R, retrain (``fedweave.workflows.prune``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedweave.cli.common import ImportOpt, SetOpt, app, console, fail
from fedweave.errors import UserError


@app.command("prune")
def prune_cmd(
    config: Annotated[Path | None, typer.Argument(help="YAML/TOML config; none = default")] = None,
    scorer: Annotated[str, typer.Option("--scorer", help="how samples are scored")] = "",
    train_ratio: Annotated[float, typer.Option("--train-ratio",
                                               help="fraction of each node's data kept")] = 0.5,
    keep: Annotated[str, typer.Option("--keep", help="top (most helpful) or lowest")] = "top",
    balance: Annotated[str, typer.Option(
        "--balance", help="class: keep the ratio within each class of every node; none: the "
                          "node's best scores whatever their class")] = "class",
    stage1: Annotated[Path | None, typer.Option(
        "--stage1", help="reuse this finished run as stage 1 instead of training CONFIG")] = None,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option("--out", help="parent folder of run dirs")] = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue a prune dir")] = None,
    imports: ImportOpt = None,
) -> None:
    """Two-stage pruning: stage 1 on all data → scores → stage 2 on the kept samples.

    Prints the run directory first, then each stage (training rounds as in ``fedweave run``).
    Ctrl-C or SIGTERM stops (after the current round in a training stage) with the line that
    resumes it (exit 130 / 143)."""
    from fedweave.cli.progress import PipelineProgress, interruptible
    from fedweave.influence import SCORERS
    from fedweave.plugins import load_config
    from fedweave.workflows.prune import PrunePipeline

    try:
        if resume is not None:
            prune, pipe = PrunePipeline.resume(resume, list(imports or []))
        else:
            if not scorer:
                raise UserError("--scorer is required; choose one of: "
                                f"{', '.join(SCORERS.names())}")
            if keep not in ("top", "lowest"):
                raise UserError(f"--keep {keep}: choose top or lowest")
            overrides = list(set_ or [])
            if out is not None:
                overrides.append(f"output.dir={out}")
            if stage1 is not None:
                if config is not None:
                    raise UserError("give either CONFIG or --stage1 RUN_DIR, not both")
                changed = [o for o in overrides if not o.startswith(("output.", "influence."))]
                if changed:
                    raise UserError(f"--set {changed[0]}: with --stage1 stage 2 repeats stage 1's "
                                    "config; only output.* and influence.* keys may change")
                if not (stage1 / "config.yaml").is_file():
                    raise UserError(f"--stage1 {stage1}: not a run directory (no config.yaml)")
                cfg = load_config(stage1 / "config.yaml", overrides, imports or [])
            else:
                cfg = load_config(config, overrides, imports or [])
            prune = PrunePipeline(cfg, scorer, train_ratio, keep, stage1, balance)
            pipe = prune.create()
        progress = PipelineProgress(console, "fedweave prune",
                                    show_rounds=prune.config.output.progress or resume is not None)
        pipe.listener, pipe.callbacks = progress, progress.callbacks
        with interruptible(progress):
            results = pipe.run()
            summary = prune.finish(pipe, results)
    except UserError as exc:
        fail(str(exc), 2)
        return
    s1, s2 = summary["stage1"]["final"], summary["stage2"]["final"]
    kept = summary["samples_kept"]
    console.print(f"stage 1 test acc {s1.get('test_acc', float('nan')):.4f}  ·  stage 2 "
                  f"({prune.scorer}, {prune.keep} {prune.ratio:g}, balance {prune.balance}: "
                  f"{kept.get('total')}/"
                  f"{kept.get('total_of')} samples) test acc "
                  f"{s2.get('test_acc', float('nan')):.4f}  →  {pipe.root}", highlight=False,
                  soft_wrap=True, markup=False)
