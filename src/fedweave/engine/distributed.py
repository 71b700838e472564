"""The *distributed* engine: one algorithm, several processes (torch.distributed, torchrun).

Launch (one process per rank; ``WORLD_SIZE > 1`` selects this engine automatically)::

    torchrun --standalone --nproc-per-node 2 -m fedweave run CONFIG        # one host
    fedweave run CONFIG --procs 2                                          # the same
    torchrun --nnodes 3 --nproc-per-node 1 --rdzv-backend c10d \\
             --rdzv-endpoint HOST0:29400 --rdzv-id RUN -m fedweave run CONFIG   # on each of 3

Every rank runs the same round loop; the expensive parts are split:

- **Federated cohorts** (``DistributedTrainer``): the K rows of a round's cohort are assigned
  to ranks greedily by work (longest step count first, to the least loaded rank; ties by row
  and rank, so every rank computes the same assignment without communicating). Each rank runs
  the ordinary ``LocalTrainer`` on its rows, then the trained rows (params, buffers, loss,
  accuracy) are all-gathered into the full ``LocalResult`` in cohort order.
- **Decentralized nodes**, ``engine.exchange: all_gather`` (``DistributedGradientEngine``): every
  rank holds all N node states; ``grads(x[N, P], ...)`` computes the gradients of a contiguous
  slice of the nodes per rank and all-gathers the ``[N, P]`` result, so mixing ``W @ X`` and
  every dual update run identically on all ranks.
- **Decentralized nodes**, ``point_to_point`` (``fedweave.engine.partition``): each rank holds
  only its block of nodes and their edge slots and swaps the messages that cross ranks with
  ``Comm.exchange`` (one batched isend/irecv per neighbouring rank and step).
- **Evaluation**: several models (``params[M]``, M > 1) are split by rows and the losses and
  accuracies all-gathered; a single model is evaluated by every rank (no communication).

Why the numbers equal the single-process run: local training of one row depends only on that
row (batches, augmentation and dropout are seeded by (seed, round, step, node); the functional
optimizer is row-wise), so a rank computes bit-for-bit the rows the single process would, and
all-gathering *rows* (not partial weighted sums as in pfl-research's all-reduce) leaves the
aggregation — ``weighted_mean`` over ``[K, P]`` in cohort order — to the same code on the same
tensor on every rank: the result is identical to the single process, whatever the number of
ranks, and every rank keeps an identical state without a broadcast. The cost is K·P values per
round instead of P (rows of the cohort only, never of all N nodes).

Faults: ``engine.timeout_s`` is the process-group timeout; a watchdog thread also ends a rank
stuck in a collective for longer than that (NCCL or a peer that hangs without closing its
sockets). A failed or timed-out collective ends the process with exit code 1 and one line that
names the rank that did not arrive (from per-rank progress counters in the rendezvous store)
and the last completed round; rank 0 writes checkpoints atomically between rounds, so
``fedweave run --resume RUN_DIR`` (under the same launcher) continues from the last one.

Devices: gloo on CPU, NCCL on CUDA; under torchrun each rank uses ``cuda:<LOCAL_RANK>``
(``engine.device: auto``). The NCCL path is written to the same contract but untested here.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from fedweave.algorithms.base import RunContext
from fedweave.data.federated import FederatedData
from fedweave.engine.partition import contiguous_assignment
from fedweave.population import Buffers
from fedweave.training.local import (
    GradientEngine,
    LocalResult,
    LocalTrainer,
    StepOutput,
    batch_width,
    local_steps,
)

KILL_ENV = "FEDWEAVE_TEST_KILL_RANK"
"""Test-only fault injection: ``RANK:ROUND[:hang]`` makes rank RANK exit with code 1 (or hang,
with ``:hang``) when it starts round index ROUND (0-based, i.e. after ROUND completed rounds).
Used by tests/test_distributed.py; never set it in real runs."""


# ---------------------------------------------------------------------------------- placement
def greedy_assignment(work: Sequence[int], world: int) -> list[list[int]]:
    """Rows per rank, balanced by ``work`` (LPT: heaviest row first to the least loaded rank;
    ties broken by row index and rank number). Deterministic, so ranks need not agree by
    message. Each rank's rows are returned sorted."""
    order = sorted(range(len(work)), key=lambda i: (-int(work[i]), i))
    load = [0] * world
    rows: list[list[int]] = [[] for _ in range(world)]
    for i in order:
        r = min(range(world), key=lambda q: (load[q], len(rows[q]), q))
        rows[r].append(i)
        load[r] += max(int(work[i]), 1)
    return [sorted(x) for x in rows]


# ---------------------------------------------------------------------------------- comms
class Comm:
    """The process group of this run plus fault handling (timeout watchdog, one-line exit)."""

    def __init__(self, rank: int, world: int, timeout_s: float, device: torch.device) -> None:
        self.rank, self.world, self.timeout_s, self.device = rank, world, timeout_s, device
        self.round = 0            # rounds completed before the current one (0-based index)
        self.seq = 0              # collectives entered so far
        self._inflight: tuple[float, str] | None = None
        self._failing = threading.Lock()
        self._store: Any = None
        self._store_lock = threading.RLock()  # re-entered by the SIGTERM handler
        self._prefix = f"fedweave/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/seq/"
        if world > 1:
            self._connect_store()
            threading.Thread(target=self._watchdog, name="fedweave-watchdog", daemon=True).start()
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
            self._inflight = None
        return received

    def fail(self, what: str, cause: BaseException | str, sigterm: bool = False) -> None:
        """Print one line naming the failed rank and the last completed round; exit 1."""
        if not self._failing.acquire(blocking=False):
            time.sleep(30)  # another thread is already reporting and exiting
            os._exit(1)
        laggards = self._laggards()
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
            # one write(2) of a short line (< PIPE_BUF) starting on a fresh line: ranks sharing
            # a terminal or pipe can never splice their messages together
            os.write(2, f"\n{msg}\n".encode())
        finally:
            os._exit(1)

    def _watchdog(self) -> None:
        grace = min(5.0, 0.1 * self.timeout_s + 1.0)
        while True:
            time.sleep(0.2)
            inflight = self._inflight
            if inflight is not None and time.monotonic() - inflight[0] > self.timeout_s + grace:
                self.fail(inflight[1], f"no answer within engine.timeout_s={self.timeout_s:g} s")

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._failing.locked():  # the main thread is already reporting: let it finish
            return
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


def _rows(t: torch.Tensor | None, rows: list[int], k: int) -> torch.Tensor | None:
    """Slice per-row arguments (``[K, ...]``); shared ones (``[P]``) pass unchanged."""
    if t is None or t.dim() < 2 or t.shape[0] != k:
        return t
    return t[rows]


# ---------------------------------------------------------------------------------- training
class DistributedTrainer(LocalTrainer):
    """``LocalTrainer`` whose ``train`` runs this rank's share of the cohort and all-gathers the
    full ``LocalResult`` (module docstring)."""

    def __init__(self, engine: GradientEngine, data: FederatedData, cfg: Any, comm: Comm
                 ) -> None:
        super().__init__(engine, data, cfg)
        self.comm = comm

    def train(self, nodes: torch.Tensor, params: torch.Tensor, buffers: Buffers,
              round_index: int, lr: float, *, prox_mu: float = 0.0,
              center: torch.Tensor | None = None, correction: torch.Tensor | None = None,
              mask: torch.Tensor | None = None, width: int | None = None) -> LocalResult:
        comm = self.comm
        comm.start_round(round_index)
        k = len(nodes)
        if comm.world == 1:
            return super().train(nodes, params, buffers, round_index, lr, prox_mu=prox_mu,
                                 center=center, correction=correction, mask=mask)
        sizes = self.data.sizes[nodes.cpu()]
        steps = local_steps(self.cfg, sizes)
        assignment = greedy_assignment(steps.tolist(), comm.world)
        mine = assignment[comm.rank]
        fields: dict[str, torch.Tensor]
        if mine:
            sel = torch.tensor(mine, dtype=torch.int64, device=params.device)
            part = super().train(nodes[sel], params[sel], {n: b[sel] for n, b in buffers.items()},
                                 round_index, lr, prox_mu=prox_mu, center=_rows(center, mine, k),
                                 correction=_rows(correction, mine, k), mask=_rows(mask, mine, k),
                                 width=width or batch_width(self.data, nodes, self.cfg.batch_size))
            fields = {"params": part.params, "loss": part.loss, "acc": part.acc,
                      **{f"buffers.{n}": b for n, b in part.buffers.items()},
                      **{f"extras.{n}": e for n, e in part.extras.items()}}
        else:  # more ranks than rows: contribute nothing, receive everything
            empty = params[:0]
            fields = {"params": empty, "loss": empty[:, 0], "acc": empty[:, 0],
                      **{f"buffers.{n}": b[:0] for n, b in buffers.items()}}
        full = gather_rows(comm, fields, assignment, k, "cohort all_gather")
        return LocalResult(
            params=full["params"],
            buffers={n[8:]: v for n, v in full.items() if n.startswith("buffers.")},
            num_samples=sizes.to(params.dtype).to(params.device),
            steps=steps,
            loss=full["loss"], acc=full["acc"],
            extras={n[7:]: v for n, v in full.items() if n.startswith("extras.")},
        )


class DistributedGradientEngine:
    """Wraps a gradient engine: ``grads`` for ``[N, P]`` node stacks computes a contiguous
    slice of rows per rank and all-gathers them; ``evaluate`` splits several models by rows."""

    def __init__(self, inner: GradientEngine, comm: Comm) -> None:
        self.inner, self.comm = inner, comm
        self.name = f"distributed+{inner.name}"

    def __getattr__(self, item: str) -> Any:  # calibration, model, layout, ... of the inner one
        return getattr(self.inner, item)

    def grads(self, params: torch.Tensor, buffers: Buffers, idx: torch.Tensor,
              weight: torch.Tensor, active: torch.Tensor, key: tuple[int, ...],
              nodes: torch.Tensor) -> StepOutput:
        comm = self.comm
        if key:
            comm.start_round(int(key[0]))
        if comm.world == 1:
            return self.inner.grads(params, buffers, idx, weight, active, key, nodes)
        n = params.shape[0]
        assignment = contiguous_assignment(n, comm.world)
        mine = assignment[comm.rank]
        lo, hi = (mine[0], mine[-1] + 1) if mine else (0, 0)
        if mine:
            out = self.inner.grads(params[lo:hi], {b: v[lo:hi] for b, v in buffers.items()},
                                   idx[lo:hi], weight[lo:hi], active[lo:hi], key, nodes[lo:hi])
            fields = {"grads": out.grads, "loss": out.loss, "correct": out.correct,
                      "count": out.count, **{f"buffers.{b}": v for b, v in out.buffers.items()}}
        else:
            empty = params[:0]
            fields = {"grads": empty, "loss": empty[:, 0], "correct": empty[:, 0],
                      "count": empty[:, 0], **{f"buffers.{b}": v[:0] for b, v in buffers.items()}}
        step = f"gradient all_gather (step {key[1]})" if len(key) > 1 else "gradient all_gather"
        full = gather_rows(comm, fields, assignment, n, step)
        return StepOutput(full["grads"], full["loss"], full["correct"], full["count"],
                          {b[8:]: v for b, v in full.items() if b.startswith("buffers.")})

    def evaluate(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                 y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        comm, m = self.comm, params.shape[0]
        if comm.world == 1:
            return self.inner.evaluate(params, buffers, x, y)
        if m == 1:
            return self._evaluate_samples(params, buffers, x, y)
        assignment = contiguous_assignment(m, comm.world)
        mine = assignment[comm.rank]
        if mine:
            lo, hi = mine[0], mine[-1] + 1
            loss, acc = self.inner.evaluate(params[lo:hi],
                                            {b: v[lo:hi] for b, v in buffers.items()}, x, y)
        else:
            loss = acc = torch.zeros(0, dtype=torch.float64)
        full = gather_rows(comm, {"loss": loss, "acc": acc}, assignment, m,
                           "evaluation all_gather")
        return full["loss"], full["acc"]


    def _evaluate_samples(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                          y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One model on many samples: each rank takes a contiguous block of whole evaluation
        batches; (Σ loss, Σ correct) per rank are all-gathered and summed in rank order.
        Small sets (fewer batches than ranks) are evaluated by every rank, no communication."""
        comm, n = self.comm, len(y)
        batch = int(getattr(self.inner, "eval_batch", 2048))
        blocks = -(-n // batch)
        if blocks < comm.world:
            return self.inner.evaluate(params, buffers, x, y)
        mine = contiguous_assignment(blocks, comm.world)[comm.rank]
        lo, hi = mine[0] * batch, min((mine[-1] + 1) * batch, n)
        loss, acc = self.inner.evaluate(params, buffers, x[lo:hi], y[lo:hi])
        count = hi - lo
        part = torch.stack([loss[0].double() * count, (acc[0].double() * count).round()])
        sums = torch.stack(comm.all_gather(part.to(comm.device), "evaluation all_gather"))
        total = sums.cpu().sum(0) / max(n, 1)
        return total[:1].to(loss.dtype), total[1:].to(acc.dtype)

# ---------------------------------------------------------------------------------- context
@dataclasses.dataclass
class DistributedRunContext(RunContext):
    """``RunContext`` whose trainer splits cohorts across ranks (``with_data`` keeps it)."""

    comm: Comm | None = None

    def __post_init__(self) -> None:
        assert self.comm is not None
        inner = self.engine.inner if isinstance(self.engine, DistributedGradientEngine) \
            else self.engine
        self.trainer = DistributedTrainer(inner, self.data, self.config.train, self.comm)


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


def init_comm(timeout_s: float, device: torch.device) -> Comm:
    """Join the process group (env:// as set by torchrun) once per process."""
    global _COMM
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout_s),
                                device_id=device if device.type == "cuda" else None)
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    if _COMM is None or (_COMM.rank, _COMM.world, _COMM.device) != (rank, world, device):
        _COMM = Comm(rank, world, timeout_s, device)
    _COMM.timeout_s = timeout_s
    return _COMM


def _relocate(ctx: RunContext, device: torch.device) -> RunContext:
    """Move data, model and initial state to ``device`` (a rank's own GPU)."""
    data = ctx.data.to(device)
    ctx.model.to(device)
    return RunContext(config=ctx.config, data=data, model=ctx.model, layout=ctx.layout,
                      engine=ctx.make_engine(data), init_params=ctx.init_params.to(device),
                      init_buffers={k: v.to(device) for k, v in ctx.init_buffers.items()},
                      make_engine=ctx.make_engine)


BACKENDS = ("loop", "vectorized")


def _agree_on_backend(ctx: RunContext, comm: Comm
                      ) -> tuple[RunContext, Callable[[FederatedData], GradientEngine]]:
    """``engine.backend: auto`` calibrates on every rank; timings differ, so all ranks adopt
    rank 0's choice (one engine everywhere keeps the ranks' float behaviour identical)."""
    from fedweave.training.engines import make_gradient_engine

    name = getattr(ctx.engine, "name", "")
    code = torch.tensor([BACKENDS.index(name) if name in BACKENDS else -1], device=comm.device)
    chosen = int(comm.all_gather(code, "backend agreement")[0])
    if chosen < 0:
        return ctx, ctx.make_engine
    forced = ctx.config.engine.model_copy(update={"backend": BACKENDS[chosen]})

    def make_local(data: FederatedData) -> GradientEngine:
        engine = make_gradient_engine(forced, ctx.model, ctx.layout, data, ctx.config.seed)
        calibration = getattr(ctx.engine, "calibration", None)
        if calibration is not None:
            engine.calibration = {**calibration, "chosen": BACKENDS[chosen],  # type: ignore[attr-defined]
                                  "distributed": "rank 0's choice, adopted by every rank"}
        return engine

    if name == BACKENDS[chosen]:
        return ctx, make_local
    return dataclasses.replace(ctx, engine=make_local(ctx.data), make_engine=make_local), \
        make_local


def make_distributed(ctx: RunContext) -> RunContext:
    """The distributed version of ``ctx``: joins the process group (gloo on CPU, NCCL on CUDA
    pinned to ``LOCAL_RANK``), wraps the gradient engine and the trainer."""
    device = local_device(ctx.device)
    if device != ctx.device:
        ctx = _relocate(ctx, device)
    comm = init_comm(ctx.config.engine.timeout_s, device)
    make_local: Callable[[FederatedData], GradientEngine] = ctx.make_engine
    if ctx.config.engine.backend == "auto" and comm.world > 1:
        ctx, make_local = _agree_on_backend(ctx, comm)

    def make_engine(data: FederatedData) -> GradientEngine:
        return DistributedGradientEngine(make_local(data), comm)

    return DistributedRunContext(
        config=ctx.config, data=ctx.data, model=ctx.model, layout=ctx.layout,
        engine=DistributedGradientEngine(ctx.engine, comm), init_params=ctx.init_params,
        init_buffers=ctx.init_buffers, make_engine=make_engine, comm=comm)


def torchrun_commands(hosts: Path, config: str, port: int = 29400) -> list[tuple[str, str]]:
    """One ``(host, command)`` per entry of seed 001's ``hosts.json``: entry i of the file is
    rank i, one process per host, the store on the first host. The commands use torchrun's
    *static* rendezvous (``--node-rank`` with ``--master-addr``/``--master-port``): the c10d
    rendezvous ignores ``--node-rank`` and orders hosts by name. With ``data.nodes`` = number of
    hosts (and ``topology.file``/``hosts`` in ``config``) host i computes exactly node i."""
    from fedweave.topology import _read_hosts

    addrs = list(_read_hosts(hosts).values())
    head = addrs[0].rsplit(":", 1)[0]
    return [(addr.rsplit(":", 1)[0],
             f"torchrun --nnodes {len(addrs)} --node-rank {i} --nproc-per-node 1 "
             f"--master-addr {head} --master-port {port} -m fedweave run {config}")
            for i, addr in enumerate(addrs)]


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
