"""Fixed-width chunks of a node stack, so a row's numbers never depend on how rows are batched.

Batched kernels (vmapped convolutions, batched matrix products) choose their algorithm, and
with it their float summation order, from the batch count: on this CPU a stack of 1, 2 or 3
rows can round differently from a stack of 10. The batched engines therefore never call them
on "whatever rows there are": a stack is cut into consecutive chunks of exactly C rows (the last
padded with weight-0 copies), and processes always hold whole chunks. C = ``engine.chunk``, or
min(8 on a CPU / 64 on a GPU, the rows trained together) — a function of the config and the
machine only, never of the process count — so the same config gives bit-identical rows on 1 and
N processes. Dropout masks are drawn per chunk from (seed, "dropout", round, step, first node
of the chunk).
"""

from __future__ import annotations

import torch

AUTO_CPU, AUTO_CUDA = 8, 64


def chunk_width(configured: int | None, rows: int, device: torch.device) -> int:
    """C: ``configured``, else min(8 CPU / 64 CUDA, ``rows``) (at least 1)."""
    if configured is not None:
        return configured
    return max(1, min(AUTO_CUDA if device.type == "cuda" else AUTO_CPU, rows))


def chunks(k: int, c: int) -> list[slice]:
    """Consecutive slices of ``c`` rows covering ``range(k)`` (the last may be shorter)."""
    return [slice(s, min(k, s + c)) for s in range(0, k, c)]


def pad_rows(t: torch.Tensor, c: int, value: float | None = None) -> torch.Tensor:
    """``t[n, ...]`` → ``[c, ...]``: extra rows are copies of row 0 (or ``value``)."""
    n = t.shape[0]
    if n == c:
        return t
    fill = t[:1].expand(c - n, *t.shape[1:]) if value is None else \
        torch.full((c - n, *t.shape[1:]), value, dtype=t.dtype, device=t.device)
    return torch.cat([t, fill])


def chunk_blocks(n: int, c: int, world: int) -> list[list[int]]:
    """Rows 0..n-1 to ``world`` processes as contiguous runs of whole chunks (chunk counts per
    process differ by at most one)."""
    count = -(-n // c)
    base, extra = divmod(count, world)
    out, start = [], 0
    for r in range(world):
        take = base + (1 if r < extra else 0)
        stop = min(n, start + take * c)
        out.append(list(range(start, stop)))
        start = stop
    return out
