"""Gradients computed ahead for asynchronous peers: one engine call for the nodes that take
the same local step at different virtual times.

On the event-driven clock (``timing.py``) node i's k-th step uses the gradient of its local
objective at x_i as its (k−1)-th step left it, on the batch of key (epoch, t) = (⌊k/S⌋,
k mod S). Between two of its own steps nothing changes x_i: neighbours' messages land in
copies, duals and outboxes, which the step reads only after the gradient. So when a group of
nodes steps with key (e, t), every other held node whose *next* step has the same key and falls
in this round (``companions``) can have its gradient computed in the same engine call and kept
until its own event. Desynchronised peers (``clock.phase: random``, train/idle periods, equal
speeds) then cost one gradient call per step key instead of one per node, and a batched engine
(which computes whole chunks of rows) stops computing N rows to use one.

The numbers do not change: an engine's row k depends only on x_k, its buffers, its batch and
the key (dropout is seeded by the key and the chunk, not by which rows are active), and the
kept row is used only while x_k is bit-for-bit the one it was computed at (checked at use; a
changed row is recomputed). The buffers a row's step would write (e.g. BatchNorm statistics)
are kept with it and written at its own event, so evaluations and checkpoints between see the
same state as before. Nothing is kept across a round's end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fedweave.core.population import Buffers
from fedweave.training.protocol import StepOutput


@dataclass
class Ahead:
    """One node's gradient for its next step: the step key, the model row it was computed
    at, and the engine's outputs for that row."""

    key: tuple[int, int]
    x: torch.Tensor
    grads: torch.Tensor
    loss: torch.Tensor
    correct: torch.Tensor
    count: torch.Tensor
    buffers: dict[str, torch.Tensor]


class GradientCache:
    """Held rows' gradients computed ahead of their step (module docstring)."""

    def __init__(self) -> None:
        self.rows: dict[int, Ahead] = {}
        #: off: every step computes its own gradients (the reference the tests compare to)
        self.enabled = True
        #: engine calls and rows served from the cache (benchmarks and tests read them)
        self.calls = 0
        self.served = 0

    def clear(self) -> None:
        self.rows.clear()

    def usable(self, held: torch.Tensor, key: tuple[int, int], x: torch.Tensor
               ) -> list[int]:
        """Held rows whose kept gradient is for ``key`` and whose model row is unchanged."""
        out = []
        for row in torch.nonzero(held).flatten().tolist():
            ahead = self.rows.get(row)
            if ahead is not None and ahead.key == key and torch.equal(ahead.x, x[row]):
                out.append(row)
        return out

    def keep(self, rows: list[int], key: tuple[int, int], x: torch.Tensor,
             out: StepOutput) -> None:
        for row in rows:
            self.rows[row] = Ahead(key, x[row].clone(), out.grads[row].clone(),
                                   out.loss[row].clone(), out.correct[row].clone(),
                                   out.count[row].clone(),
                                   {k: v[row].clone() for k, v in out.buffers.items()})

    def take(self, rows: list[int], out: StepOutput | None, like: torch.Tensor,
             buffers: Buffers) -> tuple[StepOutput, Buffers]:
        """``out`` (or zeros) with the kept ``rows`` filled in, and ``buffers`` with the kept
        rows' buffers written (they leave the cache)."""
        if out is None:
            zero = torch.zeros(like.shape[0], dtype=like.dtype, device=like.device)
            out = StepOutput(torch.zeros_like(like), zero, zero.clone(), zero.clone(), buffers)
        if not rows:
            return out, out.buffers
        grads, loss, correct = out.grads, out.loss.clone(), out.correct.clone()
        count = out.count.clone()
        new_buffers = {k: v.clone() for k, v in out.buffers.items()}
        for row in rows:
            ahead = self.rows.pop(row)
            grads[row] = ahead.grads
            loss[row], correct[row], count[row] = ahead.loss, ahead.correct, ahead.count
            for k, v in ahead.buffers.items():
                new_buffers[k][row] = v
        self.served += len(rows)
        return StepOutput(grads, loss, correct, count, new_buffers), new_buffers
