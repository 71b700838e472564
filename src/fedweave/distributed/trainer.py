"""Distributed adapters: one algorithm, several processes (torch.distributed, torchrun).

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
- **Decentralized nodes**, ``launcher.exchange: all_gather`` (``DistributedGradientEngine``): every
  rank holds all N node states; ``grads(x[N, P], ...)`` computes the gradients of a contiguous
  slice of the nodes per rank and all-gathers the ``[N, P]`` result, so mixing ``W @ X`` and
  every dual update run identically on all ranks.
- **Decentralized nodes**, ``point_to_point`` (``fedweave.distributed.placement``): each rank holds
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

Faults, timeouts and the process group itself: ``fedweave.distributed.process_group``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fedweave.config import TrainConfig
from fedweave.core.population import Buffers
from fedweave.data.federated import FederatedData
from fedweave.distributed.placement import contiguous_assignment
from fedweave.distributed.process_group import Comm, gather_rows
from fedweave.training.batches import batch_width, local_steps
from fedweave.training.chunks import chunk_blocks, chunks
from fedweave.training.objectives import DataLoss, Objective
from fedweave.training.protocol import GradientEngine, LocalResult, StepOutput
from fedweave.training.trainer import LocalTrainer


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


# ---------------------------------------------------------------------------------- training
class DistributedTrainer(LocalTrainer):
    """``LocalTrainer`` whose ``train`` runs this rank's share of the cohort and all-gathers the
    full ``LocalResult`` (module docstring)."""

    def __init__(self, engine: GradientEngine, data: FederatedData, cfg: TrainConfig,
                 comm: Comm) -> None:
        super().__init__(engine, data, cfg)
        self.comm = comm

    def train(self, nodes: torch.Tensor, params: torch.Tensor, buffers: Buffers,
              round_index: int, lr: float, objective: Objective | None = None, *,
              width: int | None = None, batch_keys: torch.Tensor | None = None
              ) -> LocalResult:
        comm = self.comm
        comm.start_round(round_index)
        k = len(nodes)
        if comm.world == 1:
            return super().train(nodes, params, buffers, round_index, lr, objective,
                                 width=width, batch_keys=batch_keys)
        sizes = self.data.sizes[nodes.cpu()]
        steps = local_steps(self.cfg, sizes)
        # whole chunks of the batched engines to ranks, balanced by their longest row
        groups = chunks(k, int(getattr(self.engine, "chunk", 1)))
        by_chunk = greedy_assignment([int(steps[g].max()) for g in groups], comm.world)
        assignment = [[i for c in cs for i in range(groups[c].start, groups[c].stop)]
                      for cs in by_chunk]
        mine = assignment[comm.rank]
        fields: dict[str, torch.Tensor]
        if mine:
            sel = torch.tensor(mine, dtype=torch.int64, device=params.device)
            share = (objective or Objective()).rows(sel, k)
            part = super().train(nodes[sel], params[sel], {n: b[sel] for n, b in buffers.items()},
                                 round_index, lr, share,
                                 width=width or batch_width(self.data, nodes, self.cfg.batch_size),
                                 batch_keys=None if batch_keys is None else batch_keys[sel.cpu()])
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
        self.calibration = inner.calibration

    def __getattr__(self, item: str) -> Any:  # calibration, model, layout, ... of the inner one
        return getattr(self.inner, item)

    def grads(self, params: torch.Tensor, buffers: Buffers, idx: torch.Tensor,
              weight: torch.Tensor, active: torch.Tensor, key: tuple[int, ...],
              nodes: torch.Tensor, loss: DataLoss | None = None) -> StepOutput:
        comm = self.comm
        if key:
            comm.start_round(int(key[0]))
        if comm.world == 1:
            return self.inner.grads(params, buffers, idx, weight, active, key, nodes, loss)
        n = params.shape[0]
        assignment = chunk_blocks(n, int(getattr(self.inner, "chunk", 1)), comm.world)
        mine = assignment[comm.rank]
        lo, hi = (mine[0], mine[-1] + 1) if mine else (0, 0)
        if mine:
            out = self.inner.grads(params[lo:hi], {b: v[lo:hi] for b, v in buffers.items()},
                                   idx[lo:hi], weight[lo:hi], active[lo:hi], key, nodes[lo:hi],
                                   loss)
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
        loss, correct = self.evaluate_sums(params, buffers, x, y)
        n = max(len(y), 1)
        return (loss / n).cpu(), (correct / n).cpu()

    def evaluate_sums(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Several models: whole chunks of models per rank, sums all-gathered. One model: each
        rank takes whole evaluation batches and the per-batch sums are all-gathered and added
        in batch order — the single process's additions exactly."""
        comm, m = self.comm, params.shape[0]
        if comm.world == 1:
            return self.inner.evaluate_sums(params, buffers, x, y)
        if m == 1:
            return self._evaluate_batches(params, buffers, x, y)
        assignment = chunk_blocks(m, int(getattr(self.inner, "chunk", 1)), comm.world)
        mine = assignment[comm.rank]
        if mine:
            lo, hi = mine[0], mine[-1] + 1
            loss, correct = self.inner.evaluate_sums(
                params[lo:hi], {b: v[lo:hi] for b, v in buffers.items()}, x, y)
        else:
            loss = correct = torch.zeros(0, dtype=torch.float64, device=params.device)
        full = gather_rows(comm, {"loss": loss, "correct": correct}, assignment, m,
                           "evaluation all_gather")
        return full["loss"], full["correct"]

    def _evaluate_batches(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                          y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        comm, n = self.comm, len(y)
        batch = int(getattr(self.inner, "eval_batch", 2048))
        count = -(-n // batch)
        if count < comm.world:  # small sets: every rank evaluates everything
            return self.inner.evaluate_sums(params, buffers, x, y)
        mine = contiguous_assignment(count, comm.world)[comm.rank]
        sums = torch.zeros(len(mine), 2, dtype=torch.float64, device=params.device)
        for i, b in enumerate(mine):
            lo, hi = b * batch, min((b + 1) * batch, n)
            loss, correct = self.inner.evaluate_sums(params, buffers, x[lo:hi], y[lo:hi])
            sums[i, 0], sums[i, 1] = loss[0], correct[0]
        layout = contiguous_assignment(count, comm.world)
        full = gather_rows(comm, {"sums": sums}, layout, count, "evaluation all_gather")
        total = torch.zeros(2, dtype=torch.float64, device=params.device)
        for row in full["sums"]:  # batch order, one addition per batch: as one process adds
            total += row
        return total[:1], total[1:]
