"""``fedweave influence RUN_DIR --scorer NAME``: score a finished run's training samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fedweave.cli.common import ImportOpt, SetOpt, app, console, fail
from fedweave.cli.outputs import output_folder
from fedweave.errors import UserError
from fedweave.records.lock import DirectoryLock


def _lock_scores(folder: Path) -> DirectoryLock:
    """Create and lock the scores' folder: a second scoring into it is refused, naming the
    first one's pid (scores.csv and meta.json are never interleaved)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"influence output {folder}: cannot create it ({exc.strerror}); choose "
                        "another --out") from None
    return DirectoryLock(folder, "influence folder").acquire()


@app.command("influence")
def influence_cmd(
    run_dir: Annotated[Path | None, typer.Argument(help="a finished run directory")] = None,
    scorer: Annotated[str, typer.Option("--scorer", help="if_ekfac, if_exact, dice, tracin, "
                                                         "el2n, forgetting, random, loo")] = "",
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="write to OUT/<scorer>/ instead of RUN_DIR/influence/<scorer>/")] = None,
    resume: Annotated[Path | None, typer.Option(
        "--resume", help="RUN_DIR whose scores are kept if already written with the same "
                         "influence options")] = None,
    imports: ImportOpt = None,
) -> None:
    """Per-sample scores (higher = more helpful) → RUN_DIR/influence/<scorer>/scores.csv."""
    from fedweave.cli.progress import PipelineProgress, interruptible
    from fedweave.influence import SCORERS
    from fedweave.workflows.prune import output_dir, score_run, write_scores

    lock: DirectoryLock | None = None
    try:
        target = resume or run_dir
        if target is None:
            raise UserError("give the run directory to score (fedweave influence RUN_DIR "
                            "--scorer NAME)")
        if not scorer:
            raise UserError(f"--scorer is required; choose one of: {', '.join(SCORERS.names())}")
        if out is not None:
            output_folder(out, "--out")
        folder = (out / scorer) if out is not None else output_dir(target, scorer)
        meta_file = folder / "meta.json"
        if resume is not None and meta_file.is_file() and not set_:
            console.print(f"scores already written → {folder / 'scores.csv'}", highlight=False)
            return
        if (target / "config.yaml").is_file():  # one scoring at a time into this folder
            lock = _lock_scores(folder)
        progress = PipelineProgress(console, f"fedweave influence --scorer {scorer}")
        progress.pipeline_start(target, ["score"], [])
        progress.stage_start("score", 1, 1, False)
        with interruptible(progress):
            if out is None:
                path, meta = score_run(target, scorer, list(set_ or []), list(imports or []))
            else:
                from fedweave.config import config_to_dict
                from fedweave.influence.base import ScoredRun
                from fedweave.workflows.prune import score

                run = ScoredRun.open(target, list(set_ or []), list(imports or []))
                scores, seconds = score(run, scorer)
                meta = {"scorer": scorer, "seconds": seconds, "run": str(target),
                        "influence": config_to_dict(run.config)["influence"]}
                path = write_scores(folder, scores, meta)
        progress.stage_done("score", meta["seconds"])
    except UserError as exc:
        fail(str(exc), 2)
        return
    finally:
        if lock is not None:
            lock.release()
    console.print(f"{scorer}: scored in {meta['seconds']:.1f} s  →  {path}", highlight=False)
    if "replay_max_abs_diff" in meta:
        console.print(f"replay matched the run within {json.dumps(meta['replay_max_abs_diff'])}",
                      highlight=False)
