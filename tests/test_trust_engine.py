"""Issue 10, the engine decision through the CLI: ``engine.name: auto`` decides once per
machine (``fedweave.training.select``), so timing noise never changes results: the same config
run twice under CPU load gives identical numbers, the stored decision is what later runs use,
and a resume continues with the engine recorded in its checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from trust_cli import cli_env, fedweave, metric_rows, run_dirs

# dropout makes the MLP more than a Linear/ReLU stack, so auto times loop against vectorized
# (a plain stack goes to the fused engine by rule, with nothing to measure)
AUTO = ["--set", "rounds=2", "--set", "model.name=mlp", "--set", "model.hidden=[32]",
        "--set", "model.dropout=0.1",
        "--set", "data.nodes=8", "--set", "algorithm.clients_per_round=4",
        "--set", "engine.name=auto", "--set", "engine.threads=1",
        "--set", "output.plots=false"]


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Two busy processes competing with the runs (and their calibration) for the CPUs."""
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        yield
    finally:
        for b in burners:
            b.kill()
            b.wait()


def run_auto(tmp_path: Path, out: str, *extra: str) -> tuple[Path, dict]:  # type: ignore[type-arg]
    env = cli_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = fedweave("run", *AUTO, *extra, "--out", str(tmp_path / out), cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path / out)
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def flip_stored_decisions(tmp_path: Path) -> str:
    """Make every stored decision the other engine; returns the engine now stored."""
    path = tmp_path / "cache" / "fedweave" / "engine-decisions.json"
    data = json.loads(path.read_text())
    assert len(data["decisions"]) == 1
    for record in data["decisions"].values():
        record["chosen"] = {"loop": "vectorized", "vectorized": "loop"}[record["chosen"]]
        chosen = record["chosen"]
    path.write_text(json.dumps(data))
    return chosen


@pytest.mark.slow
def test_same_config_twice_under_cpu_load_gives_identical_numbers(tmp_path: Path,
                                                                  cpu_load: None) -> None:
    first, s1 = run_auto(tmp_path, "a")
    second, s2 = run_auto(tmp_path, "b")
    assert s1["engine_calibration"]["source"] == "measured"
    assert s2["engine_calibration"]["source"].startswith("machine cache")
    assert s1["backend"] == s2["backend"]
    assert metric_rows(first) == metric_rows(second)
    assert s1["final"] == s2["final"]
    # the decision comes from the machine's cache, not from timing: change it, runs follow
    other = flip_stored_decisions(tmp_path)
    _, s3 = run_auto(tmp_path, "c")
    assert s3["backend"] == other != s1["backend"]


@pytest.mark.slow
def test_resume_reuses_the_runs_engine(tmp_path: Path) -> None:
    """A run decides its engine, the machine's stored decision changes afterwards: the resumed
    run keeps the checkpoint's engine and ends equal to an uninterrupted run on it."""
    run_dir, summary = run_auto(tmp_path, "a")
    backend = summary["backend"]
    assert json.loads(sorted((run_dir / "checkpoints").glob("round-*.json"))[-1]
                      .read_text())["backend"] == backend
    assert flip_stored_decisions(tmp_path) != backend
    env = cli_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = fedweave("run", "--resume", str(run_dir), "--set", "rounds=3", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((run_dir / "summary.json").read_text())
    assert resumed["backend"] == backend
    assert "recorded by the resumed run" in resumed["engine_calibration"]["rule"]
    straight, s_ref = run_auto(tmp_path, "ref", "--set", "rounds=3",
                               "--set", f"engine.name={backend}")
    assert metric_rows(run_dir) == metric_rows(straight)
    assert resumed["final"] == s_ref["final"]


def test_stored_decisions_first_writer_wins_and_damage_is_ignored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes that calibrate the same workload at once keep the decision stored
    first; a damaged file reads as empty and is rewritten (json only: nothing executes)."""
    from fedweave.training import decisions

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = decisions.decision_file()
    path.parent.mkdir(parents=True)
    path.write_text("{damaged")
    assert decisions.stored_decision("w") is None
    assert decisions.store_decision("w", {"chosen": "loop"})["chosen"] == "loop"
    assert decisions.store_decision("w", {"chosen": "vectorized"})["chosen"] == "loop"
    assert decisions.stored_decision("w") == {"chosen": "loop"}
    path.write_text(json.dumps({"format": 1, "decisions": {"w": {"chosen": "os.system"}}}))
    assert decisions.stored_decision("w") is None  # only the two engines are accepted
