"""The multi-stage commands speak like ``fedweave run``: the run directory first, each stage's
start/end and its rounds or steps as plain lines off a terminal, and on SIGINT/SIGTERM the
stage that stopped and the command that resumes it (exit 130 / 143); the resumed command then
finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console

SRC = str(Path(__file__).resolve().parents[1] / "src")
PRUNE = ["--set", "algorithm.name=dsgd", "--set", "topology.name=ring", "--set",
         "model.name=mlp", "--set", "model.hidden=[16]", "--set", "data.nodes=3", "--set",
         "output.plots=false", "--set", "engine.name=loop"]


def start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "fedweave", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def signal_when(proc: subprocess.Popen[str], marker: str, signum: int) -> list[str]:
    """Lines of ``proc`` until one contains ``marker``; then ``signum``; then the rest."""
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if marker in line:
            proc.send_signal(signum)
            break
    lines += proc.stdout.read().splitlines()
    proc.wait(timeout=120)
    return lines


@pytest.mark.slow
def test_prune_prints_its_stages_and_resumes_after_sigint(tmp_path: Path) -> None:
    proc = start("prune", "--scorer", "random", "--train-ratio", "0.5", *PRUNE,
                 "--set", "rounds=12", "--set", "data.train_samples=600", "--out",
                 str(tmp_path))
    lines = signal_when(proc, "round 1/12", signal.SIGINT)
    assert proc.returncode == 130, lines
    root = next(tmp_path.iterdir())
    assert lines[0] == f"run directory: {root}"
    assert lines[1] == "stages: stage1 → score → stage2 → compare"
    assert lines[2] == "[1/4] stage1"
    assert any(line.startswith("SIGINT: stopping after this round") for line in lines)
    assert lines[-1] == (f"interrupted (SIGINT) in stage stage1 — resume with: fedweave prune "
                         f"--resume {root}")
    assert "Traceback" not in "\n".join(lines)
    state = json.loads((root / "pipeline.json").read_text())["stages"]
    assert state["stage1"]["status"] == "running"
    # the resume line works: stage 1 continues from its checkpoint, the rest follows
    proc = start("prune", "--resume", str(root))
    out = proc.communicate(timeout=300)[0].splitlines()
    assert proc.returncode == 0, out
    assert out[0] == f"resuming {root}" and "[1/4] stage1 (resuming)" in out
    assert "[2/4] score" in out and any(li.startswith("[4/4] compare done in") for li in out)
    assert json.loads((root / "stage1" / "summary.json").read_text())["rounds_done"] == 12


@pytest.mark.slow
def test_distill_prints_steps_and_stops_on_sigterm_during_synthesis(tmp_path: Path) -> None:
    cfg = {"name": "tiny", "seed": 3, "rounds": 2, "algorithm": {"name": "local"},
           "data": {"dataset": "digits", "nodes": 2, "partition": "iid"},
           "model": {"name": "cnn", "norm": "batch", "width": 0.25},
           "train": {"lr": 0.05, "batch_size": 32}, "engine": {"threads": 1},
           "output": {"plots": False},
           "distill": {"synthesis": {"iterations": 30, "batch_size": 16,
                                     "initial_batches": 40},
                       "student": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16,
                                   "new_batches_per_epoch": 0}, "baselines": []}}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg))
    proc = start("distill", str(config), "--out", str(tmp_path / "runs"))
    lines = signal_when(proc, "synthesize 2/40", signal.SIGTERM)
    assert proc.returncode == 143, lines
    root = next((tmp_path / "runs").iterdir())
    assert lines[0] == f"run directory: {root}"
    assert lines[1] == "stages: teachers → synthesize → student"
    assert "[1/3] teachers" in lines and "round 2/2" in "\n".join(lines)  # teachers' rounds
    assert "[2/3] synthesize 2/40 batches" in lines
    assert lines[-1] == (f"interrupted (SIGTERM) in stage synthesize — resume with: fedweave "
                         f"distill --resume {root}")
    assert "Traceback" not in "\n".join(lines)


def test_pipeline_lines_off_a_terminal_and_the_resume_line_on_a_signal(tmp_path: Path) -> None:
    """In process (fast): a three-stage pipeline whose middle stage reports steps and is
    stopped by SIGTERM prints the folder, the stages, one line per step and the resume line;
    the exit code is 143 and the stage stays resumable."""
    import io

    import typer

    from fedweave.cli.progress import PipelineProgress, interruptible
    from fedweave.plugins import load_config
    from fedweave.workflows.stages import Pipeline, Stage

    def steps(sc):  # type: ignore[no-untyped-def]
        for k in range(1, 4):
            sc.step(k, 5, "batches")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the signal should have stopped the stage")

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=200)
    cfg = load_config(None, [f"output.dir={tmp_path}"])
    pipe = Pipeline.create(cfg, [Stage("first", lambda sc: {"ok": 1}), Stage("make", steps),
                                 Stage("last", lambda sc: {})], kind="test")
    progress = PipelineProgress(console, "fedweave thing")
    pipe.listener, pipe.callbacks = progress, progress.callbacks
    with pytest.raises(typer.Exit) as info, interruptible(progress):
        pipe.run()
    assert info.value.exit_code == 143
    lines = buf.getvalue().splitlines()
    assert lines[0] == f"run directory: {pipe.root}"
    assert lines[1] == "stages: first → make → last"
    assert lines[2] == "[1/3] first" and lines[3].startswith("[1/3] first done in ")
    assert lines[4:8] == ["[2/3] make", "[2/3] make 1/5 batches", "[2/3] make 2/5 batches",
                          "[2/3] make 3/5 batches"]
    assert lines[8:] == [f"interrupted (SIGTERM) in stage make — resume with: fedweave thing "
                         f"--resume {pipe.root}"]
    state = json.loads((pipe.root / "pipeline.json").read_text())["stages"]
    assert state["first"]["status"] == "done" and state["make"]["status"] == "running"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
