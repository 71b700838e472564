"""PR-FL (Ma et al. 2024, "Federated Learning based on Pruning and Recovery", arXiv
2403.15439): asynchronous FL of nested pruned submodels whose densities follow the clients'
speeds and grow back late in training."""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.asynchronous.base import AsyncAlgorithm, Job
from fedweave.algorithms.asynchronous.costs import uses_per_parameter
from fedweave.algorithms.asynchronous.masks import Importance, nested_levels, submodel_mask
from fedweave.algorithms.asynchronous.staleness import StalenessConfig
from fedweave.algorithms.base import register_algorithm
from fedweave.config import AlgorithmConfig
from fedweave.context import RunContext
from fedweave.core.population import stack_buffers
from fedweave.core.state import State
from fedweave.errors import UserError
from fedweave.sim.clock import PRFL_DENSITIES, masked_download_bytes, sparse_upload_bytes
from fedweave.sim.scheduler import Event
from fedweave.training.batches import batch_schedule
from fedweave.training.objectives import Objective


class PRFLConfig(StalenessConfig):
    name: Literal["prfl"] = "prfl"
    concurrency: int | None = Field(None, ge=1, description="clients with a job; null = "
                                    "every client (PR-FL: all 10 always busy)")
    staleness_a: float = Field(0.6, ge=0, description="a of poly and hinge (PR-FL: 0.6)")
    staleness_b: int = Field(2, ge=0, description="b of hinge (versions; PR-FL: 2)")
    densities: list[float] | None = Field(
        None, description="initial density of each client (fraction of prunable weights); "
        "null = clock.profile prfl's [1,1,.6,.6,.3,.3,.1,.1,.1,.1] (client i: entry i mod "
        "10), else 1 for all")
    base_density: float = Field(0.05, gt=0, le=1, description="density of the base kernel: "
                                "every prunable layer magnitude-pruned to it")
    min_density: float = Field(0.08, gt=0, le=1, description="floor of the balanced "
                               "densities (raised by density_step on recovery)")
    density_step: float = Field(0.2, gt=0, le=1, description="density added by a recovery")
    interval: int = Field(50, ge=1, description="server updates between mask rebuilds, "
                          "density balancing and recovery checks")
    patience: int = Field(10, ge=1, description="recovery checks without improvement before "
                          "a stopper raises a density")
    recovery: bool = Field(True, description="early stopping on the server model's "
                           "validation accuracy raises the floor; per-client stoppers on "
                           "their training loss raise a client's density")
    balance_reference: Literal["fastest", "client0"] = Field(
        "fastest", description="density balancing relative to the fastest client, or to "
        "client 0 (the seed code)")
    merge: Literal["buffered_masked_average", "masked_average"] = Field(
        "buffered_masked_average", description="masked average of every client's latest "
        "model (PR-FL proper), or of the window's arrivals blended with α = Σ p_i")
    residual_split: bool = Field(True, description="download the smallest submodel once and "
                                 "each larger one's difference (pieces 0..k for rank k)")
    cost_coefficient: bool = Field(True, description="rank weights by importance ÷ their "
                                   "layer's simulated seconds per weight (upload, download, "
                                   "compute)")
    window_s: float = Field(0.5, ge=0, description="seconds from the first arrival to the "
                            "merge of everything that arrived (0 = merge at each arrival "
                            "instant); mode async only")
    mode: Literal["async", "sync"] = Field(
        "async", description="async: merge window_s after the first arrival, clients start "
        "again at once; sync (reference system 002's -ch syn): every client with a job starts "
        "from the same server version and the merge waits for the last of them (a round lasts "
        "until its slowest arrival), density balancing compares the clients' job durations")


@register_algorithm("prfl", PRFLConfig)
class PRFL(AsyncAlgorithm):
    """PR-FL. Client i trains the submodel of density ρ_i (a mask nested in every denser
    client's), its upload the masked model's values.

    * **merge** (after a window of ``window_s``): with staleness weights p_i = s_i / Σ_j s_j
      (s_j: the latest s(τ) of client j) and n_i the job's samples,
      avg[w] = Σ p_i n_i x_i[w] / Σ p_i n_i m_i[w] over ``buffered_masked_average``: every
      client's latest model (positions nobody holds keep x), x ← avg; ``masked_average``:
      the window's arrivals, x ← α·avg + (1 − α)·x with α = Σ_arrived p_i;
    * **importance**: a client's first upload after each mask rebuild carries its report,
      g² × samples at the positions it holds (g: the trained model's gradient on a fresh
      batch); reports are min-max normalised and averaged (``masks.Importance``);
    * every ``interval`` updates: **balancing** ρ_i ← clamp(ρ_i (1 − 0.9·rate_i), floor, 1)
      when |rate_i| > 0.05, rate_i = (t̄_i − t̄_ref)/t̄_i from the last ``interval``
      inter-arrival times (until the first recovery); **recovery** (stoppers with
      ``patience``): floor += density_step on the server model's validation accuracy, ρ_i +=
      density_step on client i's training loss; then the **masks are rebuilt**
      (``masks.nested_levels``).

    ``mode: sync`` (the seed's ``-ch syn``) puts a barrier in place of the window: the merge
    happens when every job of the round has arrived (all started from one version, so τ = 0
    and p_i = 1/n), and t̄_i is the mean of client i's job durations (dispatch to arrival;
    in a synchronous round every client's inter-arrival gap is the round's length).
    """

    config: PRFLConfig

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        cfg, n, p = self.config, ctx.data.nodes, self.x.numel()
        if cfg.densities is not None and len(cfg.densities) != n:
            raise UserError(f"algorithm.densities has {len(cfg.densities)} entries but "
                            f"data.nodes is {n}; give one density per client")
        if cfg.densities is not None and not all(0 < d <= 1 for d in cfg.densities):
            raise UserError("algorithm.densities: every density must be in (0, 1]")
        if cfg.recovery and not len(ctx.data.union_val()):
            raise UserError("algorithm.recovery watches validation accuracy: set "
                            "data.val_fraction > 0 or algorithm.recovery=false")
        if cfg.densities is not None:
            rho = list(cfg.densities)
        elif ctx.config.clock.profile == "prfl":
            rho = [PRFL_DENSITIES[i % 10] for i in range(n)]
        else:
            rho = [1.0] * n
        self.rho = torch.tensor(rho, dtype=torch.float64)
        self.floor = cfg.min_density
        self.value_bytes = self.x.element_size()
        self.uses = uses_per_parameter(ctx.model, ctx.layout, ctx.data.input_shape)
        self.cost = self._cost() if cfg.cost_coefficient else None
        self.importance = Importance(p)
        self.epoch = 0
        self.seen = torch.full((n,), -1, dtype=torch.int64)   # mask epoch each client holds
        self.reported = torch.zeros(n, dtype=torch.bool)      # report sent since the rebuild
        self.s_latest = torch.ones(n, dtype=torch.float64)
        self.gaps = torch.full((n, cfg.interval), math.nan, dtype=torch.float64)
        self.last_arrival = torch.zeros(n, dtype=torch.float64)
        self.cache = torch.zeros(n, p, dtype=self.x.dtype)
        self.cache_mask = torch.zeros(n, p, dtype=torch.bool)
        self.cache_n = torch.zeros(n, dtype=torch.float64)
        self.best_val, self.bad_val = -math.inf, 0
        self.best_loss = torch.full((n,), math.inf, dtype=torch.float64)
        self.bad_loss = torch.zeros(n, dtype=torch.int64)
        self.loss_sum = torch.zeros(n, dtype=torch.float64)
        self.loss_n = torch.zeros(n, dtype=torch.float64)
        self.balancing = True
        self.window_open = False
        self._rebuild()

    # ------------------------------------------------------------------ masks
    def _cost(self) -> torch.Tensor:
        """Simulated seconds per weight of each layer: value bytes / mean upload and download
        bandwidth + a mean dense job's compute × the weight's share of the multiply-adds."""
        fc, n = self.fclock, self.ctx.data.nodes
        up = float(fc.profile.bandwidth_up.mean())
        down = float(fc.profile.bandwidth_down.mean())
        compute = sum(fc.compute_seconds(i, float(self.samples[i]), float(self.steps[i]))
                      for i in range(n)) / n
        return self.value_bytes * (1 / up + 1 / down) + compute * self.uses / self.uses.sum()

    def _rebuild(self) -> None:
        """Nested masks for the current densities from the interval's importance."""
        self.levels = sorted({float(r) for r in self.rho.tolist()})
        self.rank_of = [self.levels.index(float(r)) for r in self.rho.tolist()]
        self.level = nested_levels(self.x, self.ctx.layout, self.importance.value(),
                                   self.levels, self.config.base_density, self.cost)
        counts = torch.bincount(self.level.long(), minlength=len(self.levels) + 1)
        self.piece = counts[:len(self.levels)].tolist()        # |level == k|
        self.nnz = torch.cumsum(counts, 0)[:len(self.levels)].tolist()  # |level ≤ k|
        self.importance.reset()
        self.epoch += 1
        self.reported.zero_()

    def client_densities(self) -> dict[str, float]:
        """ρ_i of every client (``nodes/densities.csv``)."""
        return {f"client{i}": float(r) for i, r in enumerate(self.rho.tolist())}

    # ------------------------------------------------------------------ jobs
    def start_row(self, node: int) -> tuple[torch.Tensor, torch.Tensor | None, int]:
        rank = self.rank_of[node]
        mask = submodel_mask(self.level, rank).to(self.x.device)
        return self.x * mask, mask, rank

    def download(self, nodes: list[int]) -> tuple[list[float], list[tuple[float, float]],
                                                   list[float]]:
        """Residual split: pieces 0..max rank of the group, each once; rank k reads pieces
        0..k. Otherwise each distinct submodel once. Bitmaps go with the stream when a member
        lacks the current masks (``sim.clock.masked_download_bytes``)."""
        p, vb = self.x.numel(), self.value_bytes
        ranks = [self.rank_of[i] for i in nodes]
        stale = [int(self.seen[i]) != self.epoch for i in nodes]
        self.seen[nodes] = self.epoch
        if self.config.residual_split:
            index = any(stale)
            sizes = [float(masked_download_bytes(self.piece[k], p, vb, index))
                     for k in range(max(ranks) + 1)]
            ends = torch.tensor([0.0, *sizes]).cumsum(0).tolist()
            return sizes, [(0.0, ends[k + 1]) for k in ranks], [ends[k + 1] for k in ranks]
        distinct = sorted(set(ranks))
        sizes = [float(masked_download_bytes(
            self.nnz[k], p, vb, any(s for s, r in zip(stale, ranks, strict=True) if r == k)))
            for k in distinct]
        starts = dict(zip(distinct, torch.tensor([0.0, *sizes]).cumsum(0).tolist(),
                          strict=False))
        need = [(starts[k], starts[k] + sizes[distinct.index(k)]) for k in ranks]
        return sizes, need, [hi - lo for lo, hi in need]

    def upload_bytes(self, job: Job) -> float:
        """The masked model's values; the first upload after a rebuild also carries the
        importance report (values at the same positions)."""
        job.report = not bool(self.reported[job.node])
        self.reported[job.node] = True
        nnz = int(job.mask.sum()) if job.mask is not None else self.x.numel()
        return float(sparse_upload_bytes(nnz, self.value_bytes) * (2 if job.report else 1))

    def compute_fraction(self, job: Job) -> float:
        if job.mask is None:
            return 1.0
        return float(self.uses[job.mask.cpu()].sum() / self.uses.sum())

    def objective(self, jobs: list[Job], rows: torch.Tensor) -> Objective:
        masks = torch.stack([j.mask if j.mask is not None else torch.ones_like(j.row).bool()
                             for j in jobs]).to(rows.dtype)
        return Objective(mask=masks)

    def _report(self, job: Job) -> torch.Tensor:
        """g² × samples of the trained model on a fresh batch (seed, "importance", job)."""
        ctx = self.ctx
        node = torch.tensor([job.node])
        b = batch_schedule(ctx.data, node, torch.ones(1, dtype=torch.int64),
                           ctx.config.train.batch_size, (job.index,), purpose="importance",
                           width=self.width)
        out = ctx.engine.grads(job.row.unsqueeze(0), stack_buffers(job.buffers, 1),
                               b.idx[:, 0], b.weight[:, 0], torch.ones(1, dtype=torch.bool),
                               (self.version, 0), node.to(ctx.device))
        return out.grads[0] ** 2 * job.samples

    # ------------------------------------------------------------------ server
    def on_arrival(self, job: Job) -> list[Job] | None:
        i = job.node
        self.s_latest[i] = self.config.weight(self.tau(job))
        now = self.clock.now
        # sync: the round's jobs all started at the last update; the job's own duration
        start = self.last_update if self.config.mode == "sync" else float(self.last_arrival[i])
        self.gaps[i] = torch.cat([self.gaps[i, 1:], torch.tensor([now - start])])
        self.last_arrival[i] = now
        self.loss_sum[i] += job.loss
        self.loss_n[i] += 1
        if job.report and job.mask is not None:
            self.importance.add(self._report(job), job.mask.cpu())
        self.cache[i] = job.row
        self.cache_mask[i] = job.mask if job.mask is not None else True
        self.cache_n[i] = job.samples
        if self.config.mode == "sync":  # the barrier: merge when the round's last job arrives
            if all(j.arrived for j in self.jobs.values()):
                return self.on_merge(None)
            return None
        if not self.window_open:
            self.window_open = True
            self.clock.at(now + self.config.window_s, "merge", -1)
        return None

    def _masked_average(self, rows: torch.Tensor, masks: torch.Tensor, w: torch.Tensor
                        ) -> torch.Tensor:
        """Σ w_i x_i / Σ w_i m_i per position (rows are masked), x where nobody holds it."""
        num = torch.zeros_like(self.x)
        den = torch.zeros_like(self.x)
        for k in range(len(w)):
            num.add_(rows[k], alpha=float(w[k]))
            den.add_(masks[k].to(self.x.dtype), alpha=float(w[k]))
        return torch.where(den > 0, num / den.clamp(min=1e-30), self.x)

    def on_merge(self, event: Event | None) -> list[Job]:
        self.window_open = False
        held = sorted((j for j in self.jobs.values() if j.arrived), key=lambda j: j.node)
        p = self.s_latest / self.s_latest.sum()
        if self.config.merge == "buffered_masked_average":
            have = torch.nonzero(self.cache_n > 0).flatten()
            self.x = self._masked_average(self.cache[have], self.cache_mask[have],
                                          p[have] * self.cache_n[have])
        else:
            nodes = [j.node for j in held]
            avg = self._masked_average(self.cache[nodes], self.cache_mask[nodes],
                                       p[nodes] * self.cache_n[nodes])
            alpha = float(p[nodes].sum())
            self.x = alpha * avg + (1 - alpha) * self.x
        self.mix_buffers(held, [j.samples for j in held], 1.0)
        for job in held:
            self.release(job)
        self.traffic.extras.update(self._cached_average_metric())
        if (self.version + 1) % self.config.interval == 0:
            self._maintain()
        self.traffic.extras["density_mean"] = float(self.rho.mean())
        return held

    def _cached_average_metric(self) -> dict[str, float]:
        """The seed's curve, labelled as such: the plain (p_i n_i weighted) average of the
        cached client submodels, zeros included, on the full test set; evaluated rounds only."""
        out = self.ctx.config.output
        v = self.version + 1
        if v % out.eval_every and v != self.ctx.config.rounds:
            return {}
        have = torch.nonzero(self.cache_n > 0).flatten()
        w = (self.s_latest[have] * self.cache_n[have]).to(self.x.dtype)
        avg = (w / w.sum()) @ self.cache[have]
        data = self.ctx.data
        loss, acc = self.ctx.engine.evaluate(avg.unsqueeze(0), stack_buffers(self.buffers, 1),
                                             data.test_inputs(), data.test_y)
        return {"cached_average_test_acc": float(acc[0]), "cached_average_test_loss":
                float(loss[0])}

    def _maintain(self) -> None:
        """Every ``interval`` updates: balance, recover, rebuild the masks."""
        cfg = self.config
        if self.balancing:
            mean = self.gaps.nanmean(1)
            ok = ~torch.isnan(mean)
            if bool(ok.any()):
                ref = float(mean[ok].min()) if cfg.balance_reference == "fastest" \
                    else float(mean[0])
                for i in torch.nonzero(ok).flatten().tolist():
                    rate = (float(mean[i]) - ref) / float(mean[i])
                    if abs(rate) > 0.05 and not math.isnan(ref):
                        new = float(self.rho[i]) * (1 - 0.9 * rate)
                        self.rho[i] = min(1.0, max(self.floor, new))
        if cfg.recovery:
            self._recover()
        self._rebuild()

    def _recover(self) -> None:
        cfg, data = self.config, self.ctx.data
        idx = data.union_val()
        _, acc = self.ctx.engine.evaluate(self.x.unsqueeze(0), stack_buffers(self.buffers, 1),
                                          *data.take_inputs(idx))
        if float(acc[0]) > self.best_val:
            self.best_val, self.bad_val = float(acc[0]), 0
        else:
            self.bad_val += 1
        if self.bad_val >= cfg.patience:
            self.floor = min(1.0, self.floor + cfg.density_step)
            self.rho.clamp_(min=self.floor)
            self.bad_val, self.balancing = 0, False
        seen = self.loss_n > 0
        mean = self.loss_sum / self.loss_n.clamp(min=1)
        better = seen & (mean < self.best_loss)
        self.best_loss = torch.where(better, mean, self.best_loss)
        self.bad_loss = torch.where(better, 0, self.bad_loss + seen.long())
        stuck = self.bad_loss >= cfg.patience
        if bool(stuck.any()):
            self.rho = torch.where(stuck, (self.rho + cfg.density_step).clamp(max=1.0),
                                   self.rho)
            self.bad_loss[stuck] = 0
            self.balancing = False
        self.loss_sum.zero_()
        self.loss_n.zero_()

    def info(self) -> dict[str, object]:
        return {**super().info(), "merge": self.config.merge,
                "residual_split": self.config.residual_split, "mode": self.config.mode,
                "final_densities": self.rho.tolist(), "density_floor": self.floor}

    # ------------------------------------------------------------------ checkpoints
    def policy_state(self) -> State:
        return {
            "rho": self.rho, "level": self.level,
            "importance": {"sum": self.importance.sum, "count": self.importance.count},
            "seen": self.seen, "reported": self.reported.to(torch.uint8),
            "s_latest": self.s_latest, "gaps": self.gaps, "last_arrival": self.last_arrival,
            "cache": self.cache, "cache_mask": self.cache_mask.to(torch.uint8),
            "cache_n": self.cache_n, "best_loss": self.best_loss, "bad_loss": self.bad_loss,
            "loss_sum": self.loss_sum, "loss_n": self.loss_n,
            "scalars": torch.tensor([self.floor, self.best_val, self.bad_val, self.epoch,
                                     float(self.balancing), float(self.window_open)],
                                    dtype=torch.float64),
        }

    def load_policy_state(self, state: State) -> None:
        self.rho = state["rho"].clone()
        self.levels = sorted({float(r) for r in self.rho.tolist()})
        self.rank_of = [self.levels.index(float(r)) for r in self.rho.tolist()]
        self.level = state["level"].clone()
        counts = torch.bincount(self.level.long(), minlength=len(self.levels) + 1)
        self.piece = counts[:len(self.levels)].tolist()
        self.nnz = torch.cumsum(counts, 0)[:len(self.levels)].tolist()
        self.importance.sum = state["importance"]["sum"].clone()
        self.importance.count = state["importance"]["count"].clone()
        self.seen = state["seen"].clone()
        self.reported = state["reported"].bool()
        for name in ("s_latest", "gaps", "last_arrival", "cache", "cache_n", "best_loss",
                     "bad_loss", "loss_sum", "loss_n"):
            setattr(self, name, state[name].clone())
        self.cache_mask = state["cache_mask"].bool()
        floor, best, bad, epoch, balancing, window = state["scalars"].tolist()
        self.floor, self.best_val, self.bad_val = floor, best, int(bad)
        self.epoch, self.balancing, self.window_open = int(epoch), bool(balancing), bool(window)
