"""Where and how a run was made, for ``summary.json``: library versions, host, command line,
process count and the git commit of the config's folder. Environment variables are never
recorded (they may hold tokens, e.g. ``FEDWEAVE_NOTIFY``)."""

from __future__ import annotations

import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from fedweave.version import __version__


def git_commit(folder: Path) -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the git work tree holding ``folder``, or None (no git, not a
    repository)."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(folder), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status)}


def command_line() -> str:
    """The command that started this process, as one shell line (program name, not path)."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]
    return shlex.join(argv)


def environment(config_source: Path | None, processes: int, device: torch.device
                ) -> dict[str, Any]:
    """The facts of this process: versions, host, command line, processes, device, git."""
    env: dict[str, Any] = {
        "fedweave": __version__, "python": platform.python_version(),
        "torch": torch.__version__, "platform": platform.platform(),
        "host": socket.gethostname(), "command": command_line(), "processes": processes,
        "device": str(device), "threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(device)
    if config_source is not None:
        env["config"] = str(config_source)
        git = git_commit(Path(config_source).resolve().parent)
        if git is not None:
            env["git"] = git
    return env
