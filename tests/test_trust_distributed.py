"""Faults of ``fedweave run --procs N`` (the launcher, ``fedweave.distributed.launcher``): a
stopped (SIGSTOP) rank, rank 0 included, ends the whole command within ``launcher.timeout_s`` + 5 s
with one line naming it and exit 1; ranks never outlive the launcher, even after ``kill -9``;
Ctrl-C / SIGTERM stop every rank with one line; a rank killed by a signal (SIGTERM and SIGKILL,
rank 0 included) is named with its signal in one line, without torch's C++ stack. Sweeps'
children never outlive a killed sweep. Never torchrun's traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from trust_cli import alive, error_lines, fedweave, pids_of_children, popen, run_dirs

TIMEOUT_S = 4.0
CONFIG = {
    "name": "faults", "seed": 5, "rounds": 500,
    "data": {"dataset": "digits", "nodes": 8, "partition": "dirichlet", "alpha": 0.5},
    "model": {"name": "mlp", "hidden": [32]},
    "train": {"lr": 0.1, "batch_size": 16, "local_epochs": 1},
    "algorithm": {"name": "fedavg", "clients_per_round": 5},
    "engine": {"name": "loop", "threads": 1},
    "launcher": {"timeout_s": TIMEOUT_S},
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


@pytest.mark.slow
@pytest.mark.parametrize("rank", [1, 0])
def test_stopped_rank_ends_the_command_within_timeout(tmp_path: Path, rank: int) -> None:
    launcher, ranks = start(tmp_path)
    os.kill(ranks[rank], signal.SIGSTOP)
    stopped = time.monotonic()
    _, err = end(launcher, ranks)
    elapsed = time.monotonic() - stopped
    assert launcher.returncode == 1
    lines = error_lines(err)
    assert len(lines) == 1, err[-3000:]
    assert f"rank {rank} was stopped (SIGSTOP)" in lines[0], lines[0]
    assert f"launcher.timeout_s={TIMEOUT_S:g} s" in lines[0] and "--resume" in lines[0]
    assert elapsed < TIMEOUT_S + 5, elapsed


@pytest.mark.slow
def test_kill_9_of_the_launcher_takes_the_ranks_with_it(tmp_path: Path) -> None:
    launcher, ranks = start(tmp_path)
    launcher.kill()
    launcher.wait()
    deadline = time.monotonic() + 5
    while any(alive(r) for r in ranks) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(r) for r in ranks)


@pytest.mark.slow
def test_ctrl_c_to_the_launcher_stops_every_rank(tmp_path: Path) -> None:
    """SIGINT (SIGTERM takes the same path, exit 143) is forwarded to the ranks."""
    launcher, ranks = start(tmp_path)
    launcher.send_signal(signal.SIGINT)
    _, err = end(launcher, ranks)
    assert launcher.returncode == 130
    (line,) = error_lines(err)
    assert "stopped by SIGINT" in line and "--resume" in line


@pytest.mark.parametrize(("rank", "sig"), [
    (1, signal.SIGKILL), pytest.param(0, signal.SIGKILL, marks=pytest.mark.slow),
    pytest.param(1, signal.SIGTERM, marks=pytest.mark.slow)])
def test_rank_killed_by_a_signal_is_named(tmp_path: Path, rank: int, sig: int) -> None:
    launcher, ranks = start(tmp_path)
    os.kill(ranks[rank], sig)
    _, err = end(launcher, ranks)
    assert launcher.returncode == 128 + sig
    (line,) = error_lines(err)
    name = signal.Signals(sig).name
    assert f"rank {rank} was killed by {name} (exit {128 + sig})" in line, line
    assert "frame #" not in err and "TCPStore" not in err, err[-3000:]


@pytest.mark.slow
def test_killed_sweep_takes_its_runs_with_it(tmp_path: Path) -> None:
    """``sweep --jobs 2`` killed with SIGKILL: its two child runs die with it."""
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "engine": {"name": "loop", "threads": 1}}))
    sweep = popen("sweep", str(config), "--grid", "seed=1,2", "--jobs", "2", "--out", "sw",
                  cwd=tmp_path)
    deadline = time.monotonic() + 180
    children: list[int] = []
    while time.monotonic() < deadline and len(children) < 2 and sweep.poll() is None:
        children = pids_of_children(sweep.pid)
        time.sleep(0.1)
    assert len(children) == 2, sweep.communicate()
    time.sleep(1.0)  # both are running (past their start-up)
    sweep.kill()
    sweep.wait()
    deadline = time.monotonic() + 5
    while any(alive(c) for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(c) for c in children)


CRASH_PLUGIN = '''
import os

from fedweave.callbacks import Callback, register_callback


class Crash(Callback):
    def on_round(self, runner, r, result):
        if os.environ.get("RANK") == "1" and r == 1:
            raise RuntimeError("plugin bug on purpose")


register_callback(lambda config: Crash())
'''


def test_rank_crashing_with_an_exception_is_one_line(tmp_path: Path) -> None:
    """A bug in rank 1 (an exception, not bad input): one line naming the rank and the
    exception, the traceback kept in a file that the line names, never printed."""
    plugin = tmp_path / "crash_plugin.py"
    plugin.write_text(CRASH_PLUGIN)
    config = tmp_path / "crash.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "rounds": 4}))
    proc = fedweave("run", str(config), "--procs", "2", "--import", str(plugin), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    line = " ".join(proc.stderr[proc.stderr.index("error:"):].split())
    assert "rank 1 failed with RuntimeError: plugin bug on purpose" in line, line
    kept = Path(line.split("traceback in ", 1)[1].split(")", 1)[0])
    assert "plugin bug on purpose" in kept.read_text() and "Traceback" in kept.read_text()
    kept.unlink()
