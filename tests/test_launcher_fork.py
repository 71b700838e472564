"""``fedweave run --procs``'s ranks are forked from the launcher (``fedweave.distributed.
launcher``): how a forked rank starts, ends and reports its status, and when the launcher
falls back to fresh processes."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from fedweave.distributed import launcher


@pytest.fixture
def one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_launcher_forks_only_at_one_torch_thread_and_without_other_threads(
        one_thread: object, monkeypatch: pytest.MonkeyPatch) -> None:
    if threading.active_count() > 1:
        pytest.skip("another test left a thread running in this process")
    monkeypatch.setattr(launcher, "_FORKABLE", [False])
    assert not launcher._can_fork()  # torch was loaded before the launcher could prepare it
    launcher._FORKABLE[0] = True
    assert launcher._can_fork()
    torch.set_num_threads(2)
    assert not launcher._can_fork()  # a child would hang on an inherited OpenMP team
    torch.set_num_threads(1)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert not launcher._can_fork()
    finally:
        stop.set()
        other.join()


@pytest.mark.parametrize(("args", "status"),
                         [(["--version"], 0), (["run", "--set", "no.such=1"], 2)])
def test_a_forked_rank_runs_the_command_line_and_exits_with_its_status(
        args: list[str], status: int, capfd: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1"}
    from fedweave.cli import main

    rank = launcher._fork_rank(main, args, env, os.getpid())
    assert rank.wait() == status
    assert rank.poll() == status
    out, err = capfd.readouterr()
    if status == 0:
        from fedweave.version import __version__

        assert __version__ in out
    else:
        assert "unknown key" in err and "Traceback" not in err


def test_a_forked_rank_killed_by_a_signal_reports_it_as_popen_does(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        signal.pause()
        os._exit(0)
    rank = launcher.ForkedRank(pid)
    assert rank.poll() is None
    rank.send_signal(signal.SIGKILL)
    assert rank.wait() == -signal.SIGKILL
    rank.send_signal(signal.SIGTERM)  # gone: nothing to signal, no error


def test_the_failure_folder_is_removed_by_the_launcher_only(monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    seen: list[Path] = []

    def fake(procs: int, args: list[str], timeout_s: float, failures: Path,
             entry: object) -> int:
        seen.append(failures)
        assert failures.is_dir()
        return 0

    monkeypatch.setattr(launcher, "_launch", fake)
    assert launcher.launch_local(2, ["run"]) == 0
    assert seen and not seen[0].exists()


_RECORDING_CLI = """
import sys
from fedweave.distributed import launcher
record = sys.argv[1]
start = launcher._start_rank
def recording(entry, args, env, me):
    rank = start(entry, args, env, me)
    with open(record, "a") as f:
        f.write(type(rank).__name__ + "\\n")
    return rank
launcher._start_rank = recording
from fedweave.cli import main
sys.argv = ["fedweave", *sys.argv[2:]]
main()
"""


def test_the_command_line_forks_its_ranks(tmp_path: Path) -> None:
    """``fedweave run --procs 2`` reaches the launcher before torch is imported, so its
    ranks are forked (a fresh interpreter per rank costs seconds)."""
    import subprocess
    import sys

    kinds = tmp_path / "kinds.txt"
    proc = subprocess.run(
        [sys.executable, "-c", _RECORDING_CLI, str(kinds), "run", "--procs", "2",
         "--set", "rounds=1", "--set", "data.nodes=4", "--set", "output.plots=false",
         "--dir", str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert kinds.read_text().split() == ["ForkedRank", "ForkedRank"]
    assert (tmp_path / "run" / "summary.json").is_file()
