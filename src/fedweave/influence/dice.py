"""``dice`` — DICE (Zhu et al., ICLR 2025, "DICE: Data Influence Cascade in Decentralized
Learning"; official code Raiden-Zhu/ICLR-2025-DICE) for synchronous D-SGD,
x^{t+1} = W (x^t − η_t g^t).

Leaving sample z of node j's batch (size B) out of step t moves node j's local model by
+η_t ∇ℓ(z; θ_j^t)/B; gossip carries the change on, and every hop through a node k multiplies
it by the Jacobian of k's local step, I − η H_k (H_k: Hessian of k's minibatch loss). DICE is
the first-order change of validation loss this causes, hop by hop (v_k^s = ∇L_val(θ_k^s), over
the whole validation split, ``influence.validation``):

    hop 0:  (η_t/B) ⟨∇ℓ(z), v_j^t⟩                                 node j, before gossip
    hop 1:  (η_t/B) Σ_{k≠j} W_kj ⟨∇ℓ(z), v_k^{t+1}⟩                neighbours, after gossip
    hop h:  (η_t/B) ⟨∇ℓ(z), [Ŵᵀ D_{t+1} Ŵᵀ D_{t+2} ⋯ D_{t+h−1} Ŵᵀ v^{t+h}]_j⟩,
            Ŵ = W − diag(W),  D_s = blockdiag_k(I − η_s (H_k^s + λI))

The one-hop estimate (``influence.dice.hops: 1``) is the paper's η[⟨g, v_j^t⟩ + Σ_{k≠j} W_kj
⟨v_k^{t+1}, g⟩] with the sign turned to "higher = more helpful" (the paper's value is a loss
change). A hop is one crossing of an edge: hop h follows the walks of h gossip steps that cross
an edge at every step (Ŵ, the official one-hop's k ≠ j applied at each hop), with the (I − ηH)
factors on the intermediate nodes only, so it decays like the products of off-diagonal mixing
weights. (The official multi-hop code also follows walks that stay at a node; their weights sum
to 1 at every hop — D-SGD keeps the change in the network average — so they do not decay.) A
sample's
score sums its contributions over every step it was in a batch; a batch's score (``batches``:
one row per node and step) is the sum over its samples. ``influence.dice.ground_truth`` also
measures DICE-GT per batch: L_j(θ_j^t) − L_j(θ_j^{t+½}) (node j without the step, before gossip)
plus Σ_{k≠j, W_kj≠0} [L_k(θ_k^{t+1} − W_kj(θ_j^{t+½} − θ_j^t)) − L_k(θ_k^{t+1})] (each
neighbour against a counterfactual gossip that used θ_j^t), L_k the validation loss at node k.

The hook (``DiceHook``) is a step observer of the decentralized base
(``DecentralizedAlgorithm.observers``): per step it computes each node's validation gradient at
its new model once (it is the next step's v^t), one forward-mode product per node and hop
(``Probe.sample_dots``), and for r hops (r − 1)·r/2 Hessian-vector products per node; a window
of the last r steps is kept until their cascades are complete. ``fedweave prune --scorer dice``
attaches it to stage 1; ``fedweave influence RUN_DIR --scorer dice`` replays the finished run
with it (runs are deterministic; the replayed final models are compared with the run's final
checkpoint and the difference recorded).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from fedweave.callbacks import Callback
from fedweave.core.population import Buffers, select_buffers
from fedweave.errors import UserError
from fedweave.influence.base import ScoredRun, Scorer, Scores, register_scorer

if TYPE_CHECKING:
    from fedweave.algorithms.decentralized.base import DecentralizedAlgorithm, StepInfo
    from fedweave.callbacks import RunView

log = logging.getLogger("fedweave")


@dataclass
class StepRecord:
    """What later hops need of one step."""

    epoch: int
    step: int
    x_before: torch.Tensor     # [N, P]
    buffers: Buffers
    rows: list[torch.Tensor]   # per node: global indices of its real batch samples
    idx: torch.Tensor          # [N, width] the step's padded batches
    weight: torch.Tensor       # [N, width] 1 for real samples
    lr: torch.Tensor           # [N]
    v_before: torch.Tensor     # [N, P] validation gradients at x_before
    v_after: torch.Tensor      # [N, P] validation gradients at x_after


class DiceHook(Callback):
    """Accumulates DICE scores of every training sample (and batch) of a D-SGD run."""

    def __init__(self) -> None:
        self.steps = 0

    def on_start(self, runner: RunView) -> None:
        """Set up on the run's own context and attach to its algorithm."""
        self.setup(ScoredRun(runner.config, ctx=runner.ctx))
        self.attach(runner.algo)  # type: ignore[arg-type]

    def setup(self, run: ScoredRun) -> None:
        self.run = run
        self.hops = run.config.influence.dice.hops
        self.gt = run.config.influence.dice.ground_truth
        data = run.data
        self.position = torch.full((len(data.y),), -1, dtype=torch.int64)
        for shard in data.train_idx:
            self.position[shard.cpu()] = torch.arange(len(shard))
        self.totals = [torch.zeros(len(s), dtype=torch.float64) for s in data.train_idx]
        self.batch_rows: dict[tuple[int, int, int], dict[str, float]] = {}
        self.window: deque[StepRecord] = deque(maxlen=self.hops)
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
        union = run.validation(None) if run.shared_validation() else None
        self.valsets = [union or run.validation(j) for j in range(data.nodes)]
        width = max(len(v[1]) for v in self.valsets)
        pad = [(width - len(y),) for _, y in self.valsets]
        self.val_x = torch.stack([torch.cat([x, x[:1].expand(p[0], *x.shape[1:])])
                                  for (x, _), p in zip(self.valsets, pad, strict=True)])
        self.val_y = torch.stack([torch.cat([y, y[:1].expand(p[0])])
                                  for (_, y), p in zip(self.valsets, pad, strict=True)])
        self.val_w = torch.stack([torch.cat([torch.ones(len(y)), torch.zeros(p[0])])
                                  for (_, y), p in zip(self.valsets, pad, strict=True)]
                                 ).to(self.val_x.device)

    def attach(self, algo: DecentralizedAlgorithm) -> None:
        cfg = self.run.config
        if cfg.algorithm.name != "dsgd" or not getattr(algo, "fast", False):
            raise UserError(
                "dice models synchronous D-SGD, x ← W(x − η g) with every edge exchanging "
                f"every step; this run is algorithm.name={cfg.algorithm.name} (use "
                "algorithm.name=dsgd, exchange_period 1, clock.asynchronous=false, no faults)")
        if cfg.train.optimizer != "sgd":
            raise UserError("dice: the cascade is the SGD step's; set train.optimizer=sgd")
        if algo.part.split:
            raise UserError("dice scores runs of one process (launcher.name=single)")
        algo.observers.append(self.observe)

    # ------------------------------------------------------------------ pieces
    def _val_grads(self, x: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        """[N, P]: every node's validation gradient at its row of ``x`` (one vmapped call)."""
        return self.run.probe.stacked_grads(x, buffers, self.val_x, self.val_y, self.val_w)

    def _val_losses(self, node: int, models: torch.Tensor, buffers: Buffers) -> torch.Tensor:
        probe, (xv, yv) = self.run.probe, self.valsets[node]
        b = select_buffers(buffers, node)
        return torch.stack([probe.losses(m, b, xv, yv).double().mean() for m in models])

    def _batch(self, rec: StepRecord, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.run.data.gather(rec.rows[j])

    def _apply_d(self, rec: StepRecord, a: torch.Tensor) -> torch.Tensor:
        """D a: per node k, a_k − η_k (H_k a_k + λ a_k) at rec's step."""
        lam = self.run.config.train.l2_lambda + self.run.config.train.weight_decay
        out = torch.empty_like(a)
        for k in range(a.shape[0]):
            x, y = self._batch(rec, k)
            hv = self.run.probe.hvp(rec.x_before[k], select_buffers(rec.buffers, k), x, y, a[k])
            out[k] = a[k] - rec.lr[k] * (hv + lam * a[k])
        return out

    def _credit(self, rec: StepRecord, hop: int, direction: torch.Tensor) -> None:
        """Per-sample contributions (η/B)⟨∇ℓ(z), direction_j⟩ of rec's batches."""
        x, y = self.run.data.gather(rec.idx)
        dots = self.run.probe.stacked_dots(rec.x_before, rec.buffers, x, y, direction)
        dots = (dots * rec.weight).double().cpu()
        for j in range(direction.shape[0]):
            rows = rec.rows[j]
            if len(rows) == 0:
                continue
            contrib = float(rec.lr[j]) / len(rows) * dots[j][rec.weight[j].cpu() > 0]
            rows_cpu = rows.cpu()
            self.totals[j].index_add_(0, self.position[rows_cpu], contrib)
            row = self.batch_rows.setdefault((j, rec.epoch, rec.step), {"score": 0.0})
            row["score"] += float(contrib.sum())
            if self.hops > 1:
                row[f"hop{hop}"] = row.get(f"hop{hop}", 0.0) + float(contrib.sum())

    # ------------------------------------------------------------------ the step
    def observe(self, algo: DecentralizedAlgorithm, info: StepInfo) -> None:
        if len(info.groups) != 1 or not bool(info.active.all()):
            raise UserError("dice needs every node to step together (synchronous D-SGD)")
        _, epoch, t = info.groups[0]
        bt = algo.batches(epoch)
        rows = [bt.idx[j, t][bt.weight[j, t] > 0] for j in range(algo.n)]
        buffers = {k: v.detach().clone() for k, v in algo.buffers.items()}
        cached = self._cache
        if cached is not None and torch.equal(cached[0], info.x_before):
            v_before, l_before = cached[1], cached[2]
        else:
            v_before, l_before = self._val_grads(info.x_before, buffers), None
        v_after = self._val_grads(info.x_after, buffers)
        rec = StepRecord(epoch, t, info.x_before.detach().clone(), buffers, rows, bt.idx[:, t],
                         bt.weight[:, t], info.lr.view(-1).detach().clone(), v_before, v_after)
        W = algo.W.to(v_after.dtype)
        off = (W - torch.diag(torch.diagonal(W))).T  # Ŵᵀ: one edge crossing
        if self.hops == 1:
            self._credit(rec, 0, v_before + off @ v_after)
        else:
            self._credit(rec, 0, v_before)
            self._credit(rec, 1, off @ v_after)
            self.window.append(rec)
            records = list(self.window)  # oldest first; the newest is rec
            for h in range(2, min(self.hops, len(records)) + 1):
                a = off @ v_after
                for mid in reversed(records[-h + 1:]):
                    a = off @ self._apply_d(mid, a)
                self._credit(records[-h], h, a)
        l_after = self._ground_truth(rec, info, W, l_before, buffers) if self.gt else None
        self._cache = (info.x_after.detach().clone(), v_after, l_after)
        self.steps += 1

    def _ground_truth(self, rec: StepRecord, info: StepInfo, W: torch.Tensor,
                      l_before: torch.Tensor | None, buffers: Buffers) -> torch.Tensor:
        n = W.shape[0]
        if l_before is None:
            l_before = torch.stack([self._val_losses(k, info.x_before[k: k + 1], buffers)[0]
                                    for k in range(n)])
        delta = info.x_local - info.x_before  # the step each node took before gossip
        l_local = torch.stack([self._val_losses(j, info.x_local[j: j + 1], buffers)[0]
                               for j in range(n)])
        l_after = torch.empty(n, dtype=torch.float64)
        cf: dict[tuple[int, int], float] = {}
        for k in range(n):
            srcs = [j for j in range(n) if j != k and float(W[k, j]) != 0.0]
            models = torch.stack([info.x_after[k]] + [info.x_after[k] - W[k, j] * delta[j]
                                                      for j in srcs])
            losses = self._val_losses(k, models, buffers)
            l_after[k] = losses[0]
            for i, j in enumerate(srcs):
                cf[(k, j)] = float(losses[i + 1] - losses[0])
        for j in range(n):
            gt = float(l_before[j] - l_local[j]) + sum(v for (k, src), v in cf.items()
                                                      if src == j)
            self.batch_rows.setdefault((j, rec.epoch, rec.step), {"score": 0.0})["gt"] = gt
        return l_after

    # ------------------------------------------------------------------ result
    def scores(self, meta: dict[str, Any] | None = None) -> Scores:
        out = Scores.per_node(self.run.data, self.totals, {"hops": self.hops, "steps": self.steps,
                                                           **(meta or {})})
        out.batches = [{"node": j, "epoch": e, "step": t, **row}
                       for (j, e, t), row in sorted(self.batch_rows.items())]
        return out


@register_scorer("dice")
class DICE(Scorer):
    kinds = ("decentralized",)

    def score(self, run: ScoredRun) -> Scores:
        """Replay the finished run with the hook (deterministic) and check its final models."""
        from fedweave.runner import Runner

        cfg = run.config.model_copy()
        cfg.output = cfg.output.model_copy(update={"eval_every": cfg.rounds, "plots": False})
        hook = DiceHook()
        runner = Runner(cfg, None, [hook], data=run.data, backend=run.ctx.backend)
        runner.run()
        meta: dict[str, Any] = {"replayed": True}
        if run.checkpoints is not None and run.rounds():
            final, _ = run.final_models()
            replayed, _, _ = runner.algo.models()
            diff = float((replayed.detach() - final).abs().max())
            meta["replay_max_abs_diff"] = diff
            if diff > 1e-4 * max(float(final.abs().max()), 1.0):
                log.warning("dice: the replay's final models differ from the run's by %.3g "
                            "(another engine or thread count?)", diff)
        return hook.scores(meta)
