"""How a ``fedweave`` command's process starts and ends (the command line only; the Python API
runs in its caller's process and leaves both alone).

**Start: freed memory kept for reuse.** glibc hands every block above its mmap threshold (at
most 32 MiB, however often such blocks are freed) straight to the kernel and takes it back on
``free``; the next block of that size is new memory, which the kernel zero-fills page by page
on first touch. A cohort's stacked models are such blocks: 100 clients of an MLP 784-128-10
are 40 MB, allocated and freed several times a round, and on the cross-device workload of
``benchmarks/cross_device.py`` the page faults alone took 1.8 s of system time in 30 rounds
(2.45 s → 0.64 s with the setting below; ``/usr/bin/time``, 2026-12-07, 2-core VM).
``mallopt`` cannot raise the threshold past 32 MiB at run time, so the setting goes in
``GLIBC_TUNABLES``, which glibc reads only when a process starts: ``reuse_freed_memory`` puts
it there and replaces the process by a fresh one of the same command line (``os.execv``: same
pid, same terminal), before anything beyond the standard library is imported. It changes where
memory comes from, never a number a run computes. It does nothing on other C libraries and
platforms, when ``GLIBC_TUNABLES`` already names a ``glibc.malloc`` setting (the user's own
choice, or the fresh process), or with ``FEDWEAVE_MALLOC=system``.

**End: no module teardown.** Once a command has returned, its files are written and closed
and its threads joined; what remains is Python tearing down every module it imported, which
for torch takes 0.4–0.6 s on this 2-core VM and does nothing a finished command needs.
``exit_now`` flushes the standard streams, runs the ``atexit`` handlers (logging, trackers'
own shutdown) and ends the process with ``os._exit``; it falls back to the normal exit when a
non-daemon thread is still running or a torch.distributed process group is still up.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import NoReturn

TUNABLES = "GLIBC_TUNABLES"
OPT_OUT = "FEDWEAVE_MALLOC"
KEEP_BYTES = 1 << 30
"""Blocks up to this size come from the heap, and up to this much freed memory stays there."""
SETTING = f"glibc.malloc.mmap_threshold={KEEP_BYTES}:glibc.malloc.trim_threshold={KEEP_BYTES}"


def wanted(environ: dict[str, str] | os._Environ[str] | None = None) -> bool:
    """Whether this process should start again with ``SETTING`` (module docstring)."""
    env = os.environ if environ is None else environ
    if sys.platform != "linux" or env.get(OPT_OUT) == "system":
        return False
    try:
        libc = os.confstr("CS_GNU_LIBC_VERSION") or ""
    except (ValueError, OSError):
        return False
    return libc.startswith("glibc") and "glibc.malloc" not in env.get(TUNABLES, "")


def reuse_freed_memory() -> None:
    """Start this command again with glibc keeping freed blocks (returns only where nothing
    is to be done; otherwise the process is replaced)."""
    if not wanted() or not getattr(sys, "orig_argv", None):
        return
    current = os.environ.get(TUNABLES)
    os.environ[TUNABLES] = f"{current}:{SETTING}" if current else SETTING
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, sys.orig_argv)


def exit_status(code: object) -> int:
    """The status ``sys.exit(code)`` ends a process with (a message: printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def end_process(status: int) -> NoReturn:
    """Run the ``atexit`` handlers, flush the standard streams and end with ``os._exit``."""
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
        logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing left to say
            stream.flush()
    os._exit(status)


def exit_now(code: object = 0) -> None:
    """End the process with ``code`` (as ``sys.exit`` takes it) without module teardown
    (module docstring); returns only by raising ``SystemExit`` where that is not safe."""
    dist = sys.modules.get("torch.distributed")
    busy = any(t.is_alive() and not t.daemon and t is not threading.main_thread()
               for t in threading.enumerate())
    if busy or (dist is not None and dist.is_available() and dist.is_initialized()):
        raise SystemExit(code)
    end_process(exit_status(code))
