"""Will it fit? Free memory of this machine (or its cgroup) and an up-front refusal for data
that would not fit, so a run too big for the machine says so before allocating anything."""

from __future__ import annotations

from pathlib import Path

from fedweave.errors import UserError

HEADROOM = 0.9  # share of the available memory a dataset may take


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> int | None:
    """Memory this process can still take: ``MemAvailable`` of /proc/meminfo, lowered to the
    cgroup's limit minus its usage (cgroup v2) when there is one; None where unknown."""
    free: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        return None
    limit = _read_int(Path("/sys/fs/cgroup/memory.max"))
    used = _read_int(Path("/sys/fs/cgroup/memory.current"))
    if limit is not None and used is not None:
        free = min(free, limit - used) if free is not None else limit - used
    return free


def gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def require_memory(nbytes: int, what: str, fix: str) -> None:
    """``UserError`` naming the estimate when ``nbytes`` exceed ``HEADROOM`` of the available
    memory (no check where the available memory is unknown)."""
    free = available_bytes()
    if free is not None and nbytes > HEADROOM * free:
        raise UserError(f"{what} needs about {gib(nbytes)} of memory but {gib(free)} are "
                        f"available: {fix}")
