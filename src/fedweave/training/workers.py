"""Independent pieces of one training step on the cores the thread rule leaves idle.

When fedweave runs torch on one thread (a small step, ``fedweave.training.threads``), the other
cores this process may use would sit idle. The pieces of a step that are independent of each
other — the fused engine's chunks of rows, the loop engine's nodes, the evaluation batches —
then run on a pool of ``cores()`` Python threads. Each piece runs the very kernels it would
run in turn, on one thread, and writes only its own rows (sums over pieces are added in the
same order), so the numbers are bit-identical to running the pieces in turn, for any number of
workers — and so to a rank of ``--procs`` or torchrun, which has one core's share and runs
them in turn. torch releases the GIL inside its kernels, so the workers overlap.

The pool is off (one worker) when ``engine.threads`` is set (the user pinned the threads),
when torch runs on more than one thread, off the CPU, and for models whose forward draws from
torch's global generator (dropout), which threads would share.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

_state = threading.local()
_pool: ThreadPoolExecutor | None = None
_workers = 1


def set_workers(count: int) -> None:
    """Use ``count`` worker threads for the pieces of a step (1: run them in turn)."""
    global _pool, _workers
    count = max(1, int(count))
    if count != _workers and _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _workers = count


def workers() -> int:
    return _workers


def _in_worker(fn: Callable[[T], R]) -> Callable[[T], R]:
    def run(item: T) -> R:
        _state.inside = True
        try:
            return fn(item)
        finally:
            _state.inside = False
    return run


def run_all(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[fn(item) for item in items]``, the items spread over the workers; results in the
    items' order. A call from inside a worker runs its items in turn (no nested pools)."""
    global _pool
    todo: Sequence[T] = list(items)
    if _workers <= 1 or len(todo) < 2 or getattr(_state, "inside", False):
        return [fn(item) for item in todo]
    if _pool is None:
        _pool = ThreadPoolExecutor(_workers, thread_name_prefix="fedweave-step")
    return list(_pool.map(_in_worker(fn), todo))
