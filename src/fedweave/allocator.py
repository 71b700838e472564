"""Freed memory kept for reuse: the command line starts with glibc's malloc told to serve large
blocks from its heap and to keep them there when freed.

glibc hands every block above its mmap threshold (at most 32 MiB, however often such blocks
are freed) straight to the kernel and takes it back on ``free``; the next block of that size
is new memory, and the kernel zero-fills it page by page on first touch. A cohort's stacked
models are such blocks: 100 clients of an MLP 784-128-10 are 40 MB, allocated and freed
several times a round, and on the cross-device workload of ``benchmarks/cross_device.py`` the
page faults alone took 1.8 s of system time in 30 rounds (2.45 s → 0.64 s with the setting
below; ``/usr/bin/time``, 2026-12-07, 2-core VM). ``mallopt`` cannot raise the threshold past
32 MiB at run time, so the setting goes in ``GLIBC_TUNABLES``, which glibc reads only when a
process starts: ``reuse_freed_memory`` puts it there and replaces the process by a fresh one
of the same command line (``os.execv``, same pid, same terminal), before anything is imported
beyond the standard library.

It changes where memory comes from, never a number a run computes. It does nothing on other
C libraries and platforms, when ``GLIBC_TUNABLES`` already names a ``glibc.malloc`` setting
(the user's own choice, or the fresh process), or with ``FEDWEAVE_MALLOC=system``. The Python
API (``fedweave.run``) runs in the caller's process and leaves its allocator alone.
"""

from __future__ import annotations

import os
import sys

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
