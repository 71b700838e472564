"""Two writers never share a folder: ``run --dir`` claims and locks its folder before any
work (and refuses a folder that is not empty or a run directory), sweeps and influence
scorings lock theirs; the second start is refused in one line naming the first's pid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from trust_cli import FAST, assert_one_line_error, fedweave, popen, run_dirs

from fedweave.records.lock import DirectoryLock


def test_dir_in_use_is_refused_naming_the_pid(tmp_path: Path) -> None:
    target = tmp_path / "x"
    target.mkdir()
    lock = DirectoryLock(target).acquire()  # another fedweave writing there
    try:
        proc = fedweave("run", *FAST, "--dir", str(target), cwd=tmp_path)
    finally:
        lock.release()
    assert_one_line_error(proc, f"in use by process {os.getpid()}")
    assert sorted(p.name for p in target.iterdir()) == [".lock"]


def test_dir_that_is_not_a_run_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "thesis"
    target.mkdir()
    (target / "metrics.csv").write_text("my own numbers\n")
    proc = fedweave("run", *FAST, "--dir", str(target), cwd=tmp_path)
    assert_one_line_error(proc, "not empty and not a fedweave run directory", "metrics.csv")
    assert (target / "metrics.csv").read_text() == "my own numbers\n"


@pytest.mark.slow
def test_two_runs_started_together_into_one_dir(tmp_path: Path) -> None:
    target = tmp_path / "x"
    procs = [popen("run", *FAST, "--set", "rounds=3", "--dir", str(target), cwd=tmp_path)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    err = next(e for p, (_, e) in zip(procs, outs, strict=True) if p.returncode == 2)
    text = " ".join(err.split())
    assert "in use by process" in text or "already holds a run" in text, text
    assert "Traceback" not in err
    rounds = [line.split(",")[0] for line in (target / "metrics.csv").read_text().splitlines()]
    assert rounds.count("3") > 0 and len(set(rounds[1:])) == 3  # one run's rows, once


def test_sweep_folder_in_use_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("rounds: 1\n")
    folder = tmp_path / "sw"
    folder.mkdir()
    lock = DirectoryLock(folder, "sweep folder").acquire()  # a sweep running there
    try:
        proc = fedweave("sweep", "c.yaml", "--grid", "seed=1,2", *FAST, "--out", str(folder),
                        cwd=tmp_path)
    finally:
        lock.release()
    assert_one_line_error(proc, "sweep folder", f"in use by process {os.getpid()}")
    assert run_dirs(folder) == []


@pytest.mark.slow
def test_influence_scoring_in_use_is_refused(tmp_path: Path) -> None:
    proc = fedweave("run", *FAST, "--set", "data.nodes=3", "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = run_dirs(tmp_path / "runs")
    folder = run_dir / "influence" / "random"
    folder.mkdir(parents=True)
    lock = DirectoryLock(folder, "influence folder").acquire()  # a scoring running there
    try:
        proc = fedweave("influence", str(run_dir), "--scorer", "random", cwd=tmp_path)
    finally:
        lock.release()
    assert_one_line_error(proc, "influence folder", f"in use by process {os.getpid()}")
    assert not (folder / "scores.csv").exists()
    proc = fedweave("influence", str(run_dir), "--scorer", "random", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (folder / "scores.csv").is_file()
