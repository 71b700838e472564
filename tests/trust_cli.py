"""What the issue-10 tests share: ``fedweave`` as a subprocess (non-TTY), as a user runs it,
and the checks of the one-line-error contract."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import fedweave

SRC = str(Path(fedweave.__file__).resolve().parents[1])  # the package under test
#: a run of a second or two: logistic regression on digits, one round, no plots
FAST = ["--set", "rounds=1", "--set", "model.name=logistic", "--set", "output.plots=false",
        "--set", "engine.name=loop", "--set", "engine.threads=1"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"}
    env.pop("FEDWEAVE_TEST_KILL_RANK", None)
    env.update(extra)
    return env


def fedweave(*args: str, cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m fedweave ARGS`` with pipes for stdout/stderr (so not a terminal)."""
    return subprocess.run([sys.executable, "-m", "fedweave", *args], cwd=cwd,
                          env=env or cli_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def popen(*args: str, cwd: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fedweave", *args], cwd=cwd,
                            env=env or cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str,
                          code: int = 2) -> str:
    """Exit ``code``, no traceback, exactly one ``error:`` line naming every needle (Rich may
    wrap a long line: it is unwrapped before matching)."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == code, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr[-3000:]
    message = " ".join(proc.stderr[proc.stderr.index("error:"):].split())
    for needle in needles:
        assert needle in message, message
    return message


def run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []


def metric_rows(run_dir: Path) -> list[dict[str, str]]:
    """metrics.csv without the wall-clock column (the only one that may differ)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k != "wall_time"} for row in csv.DictReader(f)]


def pids_of_children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid and stat[0] != "Z":
                out.append(int(entry))
    return sorted(out)


def alive(pid: int) -> bool:
    """``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
