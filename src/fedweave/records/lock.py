"""Exclusive locks on run directories and caches (``fcntl.flock``).

A writer holds ``<dir>/.lock`` (its pid inside) for as long as it writes; the kernel releases
the lock when the process ends, however it ends, so a lock file left by a killed run is stale
and simply taken over. A second writer gets one ``UserError`` naming the holder's pid.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from fedweave.errors import UserError

LOCK_NAME = ".lock"


class DirectoryLock:
    """An exclusive, non-blocking lock on a folder; ``release`` (or process exit) frees it."""

    def __init__(self, folder: Path, what: str = "run directory") -> None:
        self.path = folder / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # .lock a folder, the folder a file, unwritable, ...
            raise UserError(
                f"{self.what} {self.path.parent}: cannot take its lock {self.path} "
                f"({exc.strerror}); {LOCK_NAME} must be a file in a writable folder (remove "
                "what is there, or choose another folder)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.what} {self.path.parent} is in use by process {holder}: wait for it "
                "to finish (or stop it) before running or resuming it again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def locked(folder: Path, what: str = "folder") -> Iterator[DirectoryLock]:
    lock = DirectoryLock(folder, what).acquire()
    try:
        yield lock
    finally:
        lock.release()
