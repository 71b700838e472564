"""Issue 10, faults of ``fedweave run --procs N`` (the launcher, ``fedweave.distributed.launcher``):
a stopped (SIGSTOP) rank ends the whole command within ``engine.timeout_s`` + 5 s with one line
and exit 1; ranks never outlive the launcher, even after ``kill -9``; Ctrl-C / SIGTERM stop
every rank with one line; a rank killed by a signal is named. Never torchrun's traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import yaml
from trust_cli import alive, error_lines, pids_of_children, popen, run_dirs

TIMEOUT_S = 4.0
CONFIG = {
    "name": "faults", "seed": 5, "rounds": 500,
    "data": {"dataset": "digits", "nodes": 8, "partition": "dirichlet", "alpha": 0.5},
    "model": {"name": "mlp", "hidden": [32]},
    "train": {"lr": 0.1, "batch_size": 16, "local_epochs": 1},
    "algorithm": {"name": "fedavg", "clients_per_round": 5},
    "engine": {"backend": "loop", "threads": 1, "timeout_s": TIMEOUT_S},
    "output": {"plots": False, "checkpoint_every": 0},
}


def start(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    """A long 2-rank run, returned once both ranks are training (rounds being recorded)."""
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "output": {**CONFIG["output"],
                                                           "dir": str(tmp_path / "runs")}}))
    launcher = popen("run", str(config), "--procs", "2", cwd=tmp_path)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and launcher.poll() is None:
        dirs = run_dirs(tmp_path / "runs")
        metrics = dirs[0] / "metrics.csv" if dirs else tmp_path / "none"
        if metrics.is_file() and len(metrics.read_text().splitlines()) > 12:
            ranks = pids_of_children(launcher.pid)
            if len(ranks) == 2:
                return launcher, ranks
        time.sleep(0.1)
    launcher.kill()
    raise AssertionError(f"the run did not start: {launcher.communicate()}")


def end(launcher: subprocess.Popen[str], ranks: list[int]) -> tuple[float, str]:
    t0 = time.monotonic()
    _, err = launcher.communicate(timeout=120)
    waited = time.monotonic() - t0
    assert not any(alive(r) for r in ranks)
    assert "Traceback" not in err and "ChildFailedError" not in err, err[-3000:]
    return waited, err


def test_stopped_rank_ends_the_command_within_timeout(tmp_path: Path) -> None:
    launcher, ranks = start(tmp_path)
    os.kill(ranks[1], signal.SIGSTOP)
    stopped = time.monotonic()
    _, err = end(launcher, ranks)
    elapsed = time.monotonic() - stopped
    assert launcher.returncode == 1
    lines = error_lines(err)
    assert len(lines) == 1, err[-3000:]
    assert "rank 1 died or hung" in lines[0] and "rank 0 noticed" in lines[0]
    assert elapsed < TIMEOUT_S + 5, elapsed


def test_kill_9_of_the_launcher_takes_the_ranks_with_it(tmp_path: Path) -> None:
    launcher, ranks = start(tmp_path)
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 5
    while any(alive(r) for r in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(r) for r in ranks)


def test_ctrl_c_to_the_launcher_stops_every_rank(tmp_path: Path) -> None:
    """SIGINT (SIGTERM takes the same path, exit 143) is forwarded to the ranks."""
    launcher, ranks = start(tmp_path)
    launcher.send_signal(signal.SIGINT)
    _, err = end(launcher, ranks)
    assert launcher.returncode == 130
    (line,) = error_lines(err)
    assert "stopped by SIGINT" in line and "--resume" in line


def test_rank_killed_by_a_signal_is_named(tmp_path: Path) -> None:
    launcher, ranks = start(tmp_path)
    os.kill(ranks[1], signal.SIGKILL)
    _, err = end(launcher, ranks)
    assert launcher.returncode == 137
    # the launcher's line, or rank 0's when it noticed the lost peer first
    (line,) = error_lines(err)
    assert ("rank 1 was killed by SIGKILL (exit 137)" in line
            or "rank 1 died or hung (rank 0 noticed" in line), line
