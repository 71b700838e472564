"""Per-rank log files of a run whose ranks run separately (``fedweave run --procs N``,
torchrun, ``fedweave hosts``): ``nodes/rank<r>.log`` in the run directory, one per rank, like
reference system 001's ``node0.txt`` (each peer process's own output).

Rank 0 alone writes the rest of the run directory; it tells the other ranks where the
directory is (one all-gather at the start), and each rank appends its own lines there: a
header naming the rank and the nodes it holds, then per evaluated round one CSV row per held
node with reference system 001's columns plus the virtual time, the wall time and the seconds
this rank spent waiting in collectives and message exchanges since the last row (where a slow
or stopped peer shows). A resumed run appends to the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from fedweave.records.rundir import NODE_COLUMNS

if TYPE_CHECKING:
    from fedweave.distributed.process_group import Comm

COLUMNS = ["round", "node", *NODE_COLUMNS[1:], "sim_time", "wall_s", "comm_wait_s"]
PATH_BYTES = 4096  # the longest run directory path shared with the other ranks


def share_path(comm: Comm, path: Path | None) -> Path | None:
    """Rank 0's ``path`` on every rank (None when rank 0 writes no run directory)."""
    raw = str(path).encode() if path is not None else b""
    if len(raw) > PATH_BYTES:
        raw = b""  # too long to share: no per-rank logs (the run itself is unaffected)
    buf = torch.zeros(PATH_BYTES + 1, dtype=torch.uint8, device=comm.device)
    if raw:
        buf[0] = 1
        buf[1:1 + len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
    first = comm.all_gather(buf, "run directory path all_gather")[0].cpu()
    if not int(first[0]):
        return None
    return Path(bytes(first[1:].tolist()).rstrip(b"\0").decode())


class RankLog:
    """``nodes/rank<r>.log`` of one rank (module docstring)."""

    def __init__(self, run_dir: Path, comm: Comm, nodes: list[str], info: str) -> None:
        self.path = run_dir / "nodes" / f"rank{comm.rank}.log"
        self.comm, self.nodes = comm, nodes
        self.waited = comm.wait_s
        fresh = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            if fresh:
                f.write(f"# rank {comm.rank} of {comm.world}: nodes {', '.join(nodes)}"
                        f"{f' ({info})' if info else ''}\n{','.join(COLUMNS)}\n")

    def write(self, r: int, rows: dict[str, dict[str, float]], sim: float, wall: float
              ) -> None:
        wait = self.comm.wait_s - self.waited
        self.waited = self.comm.wait_s
        lines = []
        for node in self.nodes:
            row = rows.get(node)
            if row is None:
                continue
            values = [row.get(k, "") for k in NODE_COLUMNS[1:]]
            lines.append(",".join(str(v) for v in [r + 1, node, *values, f"{sim:.6g}",
                                                   f"{wall:.3f}", f"{wait:.3f}"]))
        if lines:
            with self.path.open("a") as f:
                f.write("\n".join(lines) + "\n")
