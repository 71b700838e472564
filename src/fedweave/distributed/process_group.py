"""torch.distributed plumbing: the process group of a run, guarded collectives and faults.

``Comm`` wraps the process group (gloo on CPU, NCCL on CUDA; env:// as set by torchrun) with
what every distributed run needs: all-gathers and point-to-point exchanges guarded by a
timeout watchdog, and one-line failure reports. ``launcher.timeout_s`` is the process-group
timeout; a watchdog thread also ends a rank stuck in a collective for longer than that (NCCL
or a peer that hangs without closing its sockets). A failed or timed-out collective ends the
process with exit code 1 and one line that names the rank that did not arrive and the last
completed round. The culprit is found in the rendezvous store: per-rank counters of the
collectives entered (a rank behind us died or hung before this one), else per-rank heartbeats
written every ``HEARTBEAT_S`` by a thread of their own (a rank silent for ``SILENT_S`` was
stopped, killed or frozen inside the collective; the report waits up to that long). Rank 0 writes
checkpoints atomically between rounds, so ``fedweave run --resume RUN_DIR`` (under the same
launcher) continues from the last one.

What is split across the ranks, and why the results equal the single process, is in
``fedweave.distributed``; which decentralized nodes a rank holds is in
``fedweave.distributed.placement``.
Devices: under torchrun each rank uses ``cuda:<LOCAL_RANK>`` (``engine.device: auto``). The
NCCL path is written to the same contract but untested here.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fedweave.distributed import FAILURE_ENV, LAUNCHED_ENV

KILL_ENV = "FEDWEAVE_TEST_KILL_RANK"
"""Test-only fault injection: ``RANK:ROUND[:hang]`` makes rank RANK exit with code 1 (or hang,
with ``:hang``) when it starts round index ROUND (0-based, i.e. after ROUND completed rounds).
Used by tests/test_distributed.py; never set it in real runs."""


HEARTBEAT_S = 1.0  # every rank's watchdog writes the time to the store this often
SILENT_S = 3.0     # a rank whose heartbeat is older is stopped, dead or frozen


# ---------------------------------------------------------------------------------- comms
class Comm:
    """The process group of this run plus fault handling (timeout watchdog, one-line exit)."""

    def __init__(self, rank: int, world: int, timeout_s: float, device: torch.device) -> None:
        self.rank, self.world, self.timeout_s, self.device = rank, world, timeout_s, device
        self.round = 0            # rounds completed before the current one (0-based index)
        self.seq = 0              # collectives entered so far
        self.wait_s = 0.0         # wall seconds spent in collectives and exchanges
        self._inflight: tuple[float, str] | None = None
        self._failing = threading.Lock()
        self._store: Any = None
        self._store_lock = threading.RLock()  # re-entered by the SIGTERM handler
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        self._prefix = f"fedweave/{restart}/seq/"
        self._alive = f"fedweave/{restart}/alive/"
        if world > 1:
            self._connect_store()
            threading.Thread(target=self._watchdog, name="fedweave-watchdog", daemon=True).start()
            threading.Thread(target=self._beating, name="fedweave-heartbeat", daemon=True).start()
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, self._on_sigterm)

    # -- progress counters in the rendezvous store (to name the rank that did not arrive)
    def _connect_store(self) -> None:
        host, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not host or not port:
            return
        try:
            self._store = dist.TCPStore(host, int(port), is_master=False,
                                        timeout=timedelta(seconds=5), wait_for_workers=False)
        except Exception:  # diagnosis only; the run works without it
            self._store = None

    def _publish(self) -> None:
        if self._store is None:
            return
        with self._store_lock:
            try:
                self._store.set(self._prefix + str(self.rank), str(self.seq))
            except Exception:
                self._store = None

    def _heartbeat(self) -> None:
        if self._store is None:
            return
        with self._store_lock:
            try:
                self._store.set(self._alive + str(self.rank), repr(time.time()))
            except Exception:
                self._store = None

    def _silent(self) -> list[int]:
        """Ranks whose heartbeat is older than ``SILENT_S`` (stopped with SIGSTOP, killed or
        frozen): they can be inside the collective we wait in, with their counter at ours."""
        if self._store is None:
            return []
        now, quiet = time.time(), []
        with self._store_lock:
            try:
                for r in range(self.world):
                    key = self._alive + str(r)
                    if r != self.rank and self._store.check([key]) and \
                            now - float(self._store.get(key)) > SILENT_S:
                        quiet.append(r)
            except Exception:  # the store's host may be gone too
                return []
        return quiet

    def _culprits(self) -> list[int]:
        """Ranks behind us (``_laggards``), else those that stop beating within ``SILENT_S``
        (a peer that died or was stopped in the middle of the collective)."""
        behind = self._laggards()
        deadline = time.monotonic() + SILENT_S + HEARTBEAT_S
        while not behind and self._store is not None and time.monotonic() < deadline:
            behind = self._silent()
            if not behind:
                time.sleep(0.2)
        return behind

    def _laggards(self) -> list[int]:
        """Ranks whose last entered collective is before ours (died or hung before it)."""
        if self._store is None:
            return []
        behind = []
        with self._store_lock:
            try:
                for r in range(self.world):
                    if r == self.rank:
                        continue
                    key = self._prefix + str(r)
                    seq = int(self._store.get(key)) if self._store.check([key]) else 0
                    if seq < self.seq:
                        behind.append(r)
            except Exception:  # the store's host may be gone too
                return []
        return behind

    # -- collectives
    def all_gather(self, tensor: torch.Tensor, what: str) -> list[torch.Tensor]:
        """``dist.all_gather`` guarded by the timeout watchdog and the failure handler."""
        self.seq += 1
        self._publish()
        out = [torch.empty_like(tensor) for _ in range(self.world)]
        self._inflight = (time.monotonic(), what)
        try:
            dist.all_gather(out, tensor.contiguous())
            if tensor.is_cuda:
                torch.cuda.current_stream().synchronize()
        except Exception as exc:  # any backend error means a lost peer
            self.fail(what, exc)
        finally:
            self.wait_s += time.monotonic() - self._inflight[0] if self._inflight else 0.0
            self._inflight = None
        return out

    def exchange(self, sends: dict[int, torch.Tensor], expect: dict[int, int], width: int,
                 dtype: torch.dtype, what: str) -> dict[int, torch.Tensor]:
        """Point-to-point: send ``sends[q]`` to rank q and receive ``expect[q]`` rows of
        ``width`` from rank q, all in one ``batch_isend_irecv``. Every rank calls this at the
        same points of the run (also with nothing to send), so the progress counters still
        name the rank that did not arrive."""
        self.seq += 1
        self._publish()
        received = {q: torch.empty(m, width, dtype=dtype, device=self.device)
                    for q, m in expect.items()}
        ops = []
        for q in sorted(set(sends) | set(received)):
            if q in sends:
                ops.append(dist.P2POp(dist.isend, sends[q].to(self.device).contiguous(), q))
            if q in received:
                ops.append(dist.P2POp(dist.irecv, received[q], q))
        if not ops:
            return received
        self._inflight = (time.monotonic(), what)
        try:
            for request in dist.batch_isend_irecv(ops):
                request.wait()
            if self.device.type == "cuda":
                torch.cuda.current_stream().synchronize()
        except Exception as exc:  # a neighbour rank died or closed its connection
            self.fail(what, exc)
        finally:
            self.wait_s += time.monotonic() - self._inflight[0] if self._inflight else 0.0
            self._inflight = None
        return received

    def fail(self, what: str, cause: BaseException | str, sigterm: bool = False) -> None:
        """Print one line naming the failed rank and the last completed round; exit 1."""
        if not self._failing.acquire(blocking=False):
            time.sleep(30)  # another thread is already reporting and exiting
            os._exit(1)
        laggards = self._laggards() if sigterm else self._culprits()
        text = str(cause).strip().splitlines()
        detail = text[0][:160] if text else type(cause).__name__
        if laggards:
            who = f"rank {', '.join(map(str, laggards))} died or hung"
        elif sigterm:
            who = f"rank {self.rank} was stopped by the launcher after another rank failed"
        else:
            who = "a peer rank died, hung or closed its connection"
        msg = (f"error: distributed run stopped: {who} (rank {self.rank} noticed in the {what} "
               f"of round {self.round + 1}: {detail}); last completed round {self.round}; "
               "resume from the run directory's checkpoint with fedweave run --resume RUN_DIR")
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            report = os.environ.get(FAILURE_ENV)
            if report:  # fedweave run --procs: the launcher prints the one line of the failure
                with open(Path(report) / f"rank{self.rank}.txt", "w") as f:
                    f.write(msg)
                return
            # one write(2) of a short line (< PIPE_BUF) starting on a fresh line: ranks sharing
            # a terminal or pipe can never splice their messages together
            os.write(2, f"\n{msg}\n".encode())
        finally:
            os._exit(1)

    def _beating(self) -> None:
        while True:  # its own thread: a rank busy reporting a failure still beats
            self._heartbeat()
            time.sleep(HEARTBEAT_S)

    def _watchdog(self) -> None:
        grace = min(5.0, 0.1 * self.timeout_s + 1.0)
        while True:
            time.sleep(0.2)
            inflight = self._inflight
            if inflight is not None and time.monotonic() - inflight[0] > self.timeout_s + grace:
                self.fail(inflight[1], f"no answer within launcher.timeout_s={self.timeout_s:g} s")

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._failing.locked():  # the main thread is already reporting: let it finish
            return
        if os.environ.get(LAUNCHED_ENV):  # fedweave run --procs: the launcher reports it
            os._exit(128 + signal.SIGTERM)
        what = self._inflight[1] if self._inflight else "computation"
        self.fail(what, "SIGTERM", sigterm=True)

    # -- tests
    def maybe_test_fault(self, round_index: int) -> None:
        """Test-only hook, see ``KILL_ENV``."""
        spec = os.environ.get(KILL_ENV)
        if not spec:
            return
        parts = spec.split(":")
        if int(parts[0]) == self.rank and int(parts[1]) == round_index:
            if len(parts) > 2 and parts[2] == "hang":
                while True:
                    time.sleep(1)
            os._exit(1)

    def start_round(self, round_index: int) -> None:
        self.round = round_index
        self.maybe_test_fault(round_index)


def gather_rows(comm: Comm, fields: dict[str, torch.Tensor], assignment: list[list[int]],
                total: int, what: str) -> dict[str, torch.Tensor]:
    """All-gather per-row tensors: ``fields[name]`` holds this rank's rows ``[k_r, ...]``;
    returns ``[total, ...]`` with rank r's rows placed at ``assignment[r]``. One collective
    per dtype (rows padded to the largest share)."""
    k_max = max(len(a) for a in assignment)
    mine = len(assignment[comm.rank])
    by_dtype: dict[torch.dtype, list[str]] = {}
    for name, t in fields.items():
        by_dtype.setdefault(t.dtype, []).append(name)
    out: dict[str, torch.Tensor] = {}
    for dtype, names in by_dtype.items():
        wire = torch.uint8 if dtype == torch.bool else dtype
        flat = [fields[n].reshape(mine, int(torch.tensor(fields[n].shape[1:]).prod())).to(wire)
                for n in names]
        widths = [f.shape[1] for f in flat]
        payload = torch.zeros(k_max, sum(widths), dtype=wire, device=comm.device)
        if mine:
            payload[:mine] = torch.cat(flat, 1).to(comm.device)
        parts = comm.all_gather(payload, what)
        for j, name in enumerate(names):
            ref = fields[name]
            full = torch.empty(total, *ref.shape[1:], dtype=dtype, device=ref.device)
            lo = sum(widths[:j])
            for r, rows in enumerate(assignment):
                if rows:
                    block = parts[r][: len(rows), lo: lo + widths[j]].to(ref.device)
                    full[rows] = block.to(dtype).reshape(len(rows), *ref.shape[1:])
            out[name] = full
    return out



_COMM: Comm | None = None


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def local_device(requested: torch.device) -> torch.device:
    """``cuda:<LOCAL_RANK>`` for a CUDA run under torchrun (pins the device), else as given."""
    if requested.type != "cuda":
        return requested
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
    torch.cuda.set_device(device)
    return device


def _wait_for_store(timeout_s: float) -> None:
    """Wait (at most ``timeout_s``) until rank 0's rendezvous store accepts connections.
    ``fedweave run --procs`` starts its ranks within milliseconds of each other, so the
    others often reach the rendezvous before rank 0 listens, and torch's client retries a
    refused connection only after a back-off of about half a second (a quarter of the
    whole run for a small job); polling the port every 5 ms avoids it."""
    where = (os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "0")))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(where, timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.005)


def init_comm(timeout_s: float, device: torch.device) -> Comm:
    """Join the process group (env:// as set by torchrun) once per process."""
    global _COMM
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        if rank > 0 and os.environ.get(LAUNCHED_ENV):
            _wait_for_store(timeout_s)
        dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if _COMM is None or (_COMM.rank, _COMM.world, _COMM.device) != (rank, world, device):
        _COMM = Comm(rank, world, timeout_s, device)
    _COMM.timeout_s = timeout_s
    return _COMM


def finish_process(code: int = 0) -> None:
    """End a distributed CLI process: a final barrier (so no rank leaves while a peer still
    exchanges), then ``os._exit`` — skipping interpreter teardown, where gloo's threads can
    abort with "terminate called without an active exception" (pytorch/pytorch#190489).
    A no-op outside a multi-process run."""
    comm = _COMM
    if comm is None or comm.world == 1 or not dist.is_initialized():
        return
    comm.all_gather(torch.zeros(1, device=comm.device), "final barrier")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _shutdown() -> None:
    if dist.is_initialized():
        with contextlib.suppress(Exception):  # exiting anyway
            dist.destroy_process_group()


atexit.register(_shutdown)
