"""How fedweave starts fedweave: child processes (``run --procs`` ranks, ``sweep --jobs``
points) with a safe module path and a life bound to their parent.

A child never has the working directory on ``sys.path``: ``python -P -m fedweave`` (Python
3.11+), else an entry point that drops ``sys.path[0]`` before importing anything, so a
``yaml.py`` or ``matplotlib.py`` lying in the user's folder is never imported. The parent's
``fedweave --trust-plugins`` is passed on. ``die_with_parent`` is a ``preexec_fn`` that makes
the child receive SIGKILL when the parent dies, however it dies (``prctl(PR_SET_PDEATHSIG)``,
Linux; elsewhere the parent still kills its children on every exit it survives).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

from fedweave.trust import trusts_listed_plugins

_PR_SET_PDEATHSIG = 1
#: Python < 3.11 has no ``-P``: drop the script folder ('' for -c) before importing fedweave
_SAFE_MAIN = ("import sys; del sys.path[0]; sys.argv[0] = 'fedweave'; "
              "from fedweave.cli import main; main()")


def fedweave_argv(*args: str) -> list[str]:
    """The command line of ``fedweave ARGS`` in a child process (safe module path)."""
    head = ["--trust-plugins"] if trusts_listed_plugins() else []
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", "fedweave", *head, *args]
    return [sys.executable, "-c", _SAFE_MAIN, *head, *args]


def die_with_parent(parent: int, ignore_sigint: bool = False) -> Callable[[], None]:
    """``preexec_fn``: SIGKILL this child when ``parent`` dies; optionally ignore the
    terminal's SIGINT (the parent forwards it)."""
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        if ignore_sigint:
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # kept across exec
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(128 + signal.SIGKILL)

    return setup
