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


def available_bytes(device: str = "cpu") -> int | None:
    """Memory this process can still take: on a CUDA device its free memory; else
    ``MemAvailable`` of /proc/meminfo, lowered to the cgroup's limit minus its usage (cgroup
    v2) when there is one; None where unknown."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
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


def require_memory(nbytes: int, what: str, fix: str, device: str = "cpu") -> None:
    """``UserError`` naming the estimate when ``nbytes`` exceed ``HEADROOM`` of the memory
    available on ``device`` (no check where it is unknown)."""
    free = available_bytes(device)
    if free is not None and nbytes > HEADROOM * free:
        where = f" on {device}" if device != "cpu" else ""
        raise UserError(f"{what} needs about {gib(nbytes)} of memory but {gib(free)} are "
                        f"available{where}: {fix}")
