"""The machine's engine decisions (``engine.name: auto``, ``fedweave.training.select``):
measured once per workload, then reused by every later run on this machine.

``$XDG_CACHE_HOME/fedweave/engine-decisions.json`` (default ``~/.cache/fedweave``) maps the
sha256 of a workload key (hardware, torch version, threads, device, model, shapes, made by
``select.calibrate``) to its record. The file is json (nothing in it executes), rewritten
atomically under an exclusive ``fcntl.flock`` on ``<file>.lock``, first writer wins: two
processes that calibrate the same workload at once (the ranks of a distributed run) both keep
the decision stored first. A damaged file reads as empty and is rewritten; where the file
cannot be written, the decision holds for the process only, with one warning.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("fedweave")
BACKENDS = ("loop", "vectorized", "fused")
FORMAT = 1
_WARNED: set[str] = set()


def decision_file() -> Path:
    """``$XDG_CACHE_HOME/fedweave/engine-decisions.json`` (default ``~/.cache/fedweave``)."""
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache") / "fedweave" / "engine-decisions.json"


def hardware(device: torch.device) -> dict[str, Any]:
    """What identifies this machine's speed: architecture, CPU model and count, GPU name."""
    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out: dict[str, Any] = {"machine": platform.machine(), "cpu": cpu, "cpus": os.cpu_count()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def _read(path: Path) -> dict[str, Any]:
    """The stored decisions ({digest: record}); a missing or damaged file reads as none."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT \
            or not isinstance(data.get("decisions"), dict):
        return {}
    return {k: v for k, v in data["decisions"].items()
            if isinstance(v, dict) and v.get("chosen") in BACKENDS}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def stored_decision(digest: str) -> dict[str, Any] | None:
    """The record stored for ``digest``, if any."""
    return _read(decision_file()).get(digest)


def store_decision(digest: str, record: dict[str, Any]) -> dict[str, Any]:
    """Store ``record`` under ``digest`` unless one is stored already (first writer wins);
    returns the stored record (``record`` itself when the file cannot be written)."""
    path = decision_file()
    try:
        with _locked(path):
            decisions = _read(path)
            if digest in decisions:
                return dict(decisions[digest])
            decisions[digest] = record
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"format": FORMAT, "decisions": decisions}, indent=1,
                                      default=str))
            os.replace(tmp, path)
    except OSError as exc:
        if str(path) not in _WARNED:
            _WARNED.add(str(path))
            log.warning("engine.name=auto: cannot store the engine decision in %s (%s); "
                        "another run may decide differently: pin engine.name=%s to keep it",
                        path, exc.strerror or exc, record["chosen"])
    return record
