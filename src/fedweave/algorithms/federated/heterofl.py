"""HeteroFL (Diao, Ding, Tarokh 2021, "HeteroFL: Computation and Communication Efficient
Federated Learning for Heterogeneous Clients")."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from fedweave.algorithms.asynchronous.costs import uses_per_parameter
from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.base import CohortAlgorithm, MemberCosts
from fedweave.algorithms.federated.sampling import CohortConfig
from fedweave.config import AlgorithmConfig
from fedweave.context import ModelShape, RunContext
from fedweave.core.population import Buffers, load_flat, slice_index, stack_buffers
from fedweave.core.state import State, section
from fedweave.errors import UserError
from fedweave.models import uses_batchnorm
from fedweave.rng import numpy_rng
from fedweave.training.protocol import LocalResult

LEVELS = [1.0, 0.5, 0.25, 0.125, 0.0625]  # HeteroFL's a–e


class HeteroFLConfig(CohortConfig):
    name: Literal["heterofl"] = "heterofl"
    levels: list[float] = Field(default_factory=lambda: list(LEVELS), description="width "
                                "rates r of the model levels (HeteroFL's a–e: 1, .5, .25, "
                                ".125, .0625)")
    proportions: list[float] | None = Field(None, description="share of clients per level "
                                            "(null = equal shares)")
    assignment: Literal["fix", "dynamic"] = Field(
        "fix", description="fix: client i keeps the level of its block (blocks in level order, "
        "sized by proportions); dynamic: every round each client draws a level with the "
        "proportions as probabilities")
    client_rates: list[float] | None = Field(None, description="an explicit rate per client "
                                             "(instead of levels/proportions/assignment)")
    weighted: bool = Field(False, description="average each element weighted by the holders' "
                           "samples n_i instead of equally (HeteroFL: equally)")
    scaler: bool = Field(True, description="divide each conv and hidden linear layer's output "
                         "by r in training (HeteroFL's scaler)")

    @model_validator(mode="after")
    def _one_source(self) -> HeteroFLConfig:
        if self.client_rates is not None:
            for key in ("levels", "proportions", "assignment"):
                if key in self.model_fields_set:
                    raise ValueError(f"algorithm.{key} has no effect with "
                                     "algorithm.client_rates; set one of the two")
        rates = [*self.levels, *(self.client_rates or [])]
        if not all(0 < r <= 1 for r in rates):
            raise ValueError("algorithm.levels / client_rates: rates must be in (0, 1]")
        if self.proportions is not None and (len(self.proportions) != len(self.levels)
                                             or min(self.proportions) < 0
                                             or sum(self.proportions) <= 0):
            raise ValueError("algorithm.proportions: one non-negative share per level")
        return self


def add_scaler(model: nn.Module, rate: float) -> None:
    """HeteroFL's scaler: in training, every conv and hidden linear output is divided by r."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for m in model.modules():
        if isinstance(m, nn.Conv2d) or (isinstance(m, nn.Linear) and m is not linears[-1]):
            m.register_forward_hook(
                lambda mod, args, out: out / rate if mod.training else out)


@register_algorithm("heterofl", HeteroFLConfig)
class HeteroFL(CohortAlgorithm):
    """A round: sample the cohort; client i trains the width-r_i submodel (the first
    round(r_i·C) channels of every hidden layer, ``ModelConfig.width`` × r_i, sliced out of the
    global model by ``core.population.slice_index``), with the scaler 1/r_i in training; the
    server averages every element over the clients that hold it (equally, or by n_i), elements
    nobody held keep their value. BatchNorm is static: running statistics from training are
    dropped, the global model's are recomputed over the training data before evaluation."""

    config: HeteroFLConfig

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        cfg, n = self.config, ctx.data.nodes
        if cfg.client_rates is not None and len(cfg.client_rates) != n:
            raise UserError(f"algorithm.client_rates has {len(cfg.client_rates)} entries but "
                            f"data.nodes is {n}; give one rate per client")
        self.x = ctx.init_params.clone()
        self.buffers: Buffers = dict(ctx.init_buffers)
        shares = torch.tensor(cfg.proportions or [1.0] * len(cfg.levels), dtype=torch.float64)
        self.shares = shares / shares.sum()
        bounds = torch.round(torch.cumsum(self.shares, 0) * n).long().tolist()
        self.fixed = cfg.client_rates or [
            cfg.levels[next(k for k, b in enumerate(bounds) if i < b)] for i in range(n)]
        self.uses = float(uses_per_parameter(ctx.model, ctx.layout, ctx.data.input_shape).sum())
        self._shapes: dict[float, tuple[ModelShape, torch.Tensor, float]] = {}

    def rates(self, r: int, cohort: torch.Tensor) -> list[float]:
        """Each member's rate in round r (fixed, or drawn from (seed, "heterofl-rate", r, i))."""
        cfg = self.config
        if cfg.client_rates is not None or cfg.assignment == "fix":
            return [self.fixed[i] for i in cohort.tolist()]
        p = self.shares.numpy()
        return [float(cfg.levels[int(numpy_rng(self.ctx.seed, "heterofl-rate", r, i)
                                      .choice(len(p), p=p))]) for i in cohort.tolist()]

    def shape(self, rate: float) -> tuple[ModelShape, torch.Tensor, float]:
        """(submodel shape, its slice of the global vector, its compute share) at ``rate``."""
        if rate not in self._shapes:
            ctx = self.ctx
            if rate == 1.0:
                shape = ctx.main
            else:
                model_cfg = ctx.config.model.model_copy(
                    update={"width": ctx.config.model.width * rate})
                shape = ctx.shape(f"heterofl-{rate}", model_cfg)
                if self.config.scaler:
                    add_scaler(shape.model, rate)
            index = slice_index(ctx.layout, shape.layout)
            share = float(uses_per_parameter(shape.model, shape.layout,
                                             ctx.data.input_shape).sum()) / self.uses
            self._shapes[rate] = (shape, index, share)
        return self._shapes[rate]

    def member_costs(self, r: int, cohort: torch.Tensor) -> MemberCosts:
        shapes = [self.shape(rate) for rate in self.rates(r, cohort)]
        nbytes = torch.tensor([float(s.model_bytes) for s, _, _ in shapes], dtype=torch.float64)
        share = torch.tensor([c for _, _, c in shapes], dtype=torch.float64)
        return MemberCosts(nbytes, nbytes.clone(), share)

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        plan = self.plan(r)
        clients = plan.clients
        rates = torch.tensor(self.rates(r, clients), dtype=torch.float64)
        total = torch.zeros_like(self.x)
        count = torch.zeros_like(self.x)
        k = len(clients)
        loss = torch.zeros(k, dtype=self.x.dtype)
        acc = torch.zeros(k, dtype=self.x.dtype)
        for rate in sorted(set(rates.tolist()), reverse=True):
            rows = torch.nonzero(rates == rate).flatten()
            shape, index, _ = self.shape(rate)
            start = self.x[index.to(self.x.device)].expand(len(rows), -1)
            local = shape.trainer.train(clients[rows].to(ctx.device), start,
                                        stack_buffers(shape.init_buffers, len(rows)), r,
                                        ctx.lr(r))
            w = (local.num_samples if self.config.weighted
                 else torch.ones(len(rows))).to(self.x.dtype).to(self.x.device)
            dev_index = index.to(self.x.device)
            total.index_add_(0, dev_index, w @ local.params)
            count.index_add_(0, dev_index, w.sum().expand(len(index)))
            loss[rows], acc[rows] = local.loss.cpu(), local.acc.cpu()
        self.x = torch.where(count > 0, total / count.clamp(min=1e-30), self.x)
        sizes = ctx.data.sizes[clients].to(self.x.dtype)
        summary = LocalResult(self.x[:0], {}, sizes, torch.zeros(k, dtype=torch.int64), loss,
                              acc)
        result = self.result(plan, summary)
        result.extras["rate_mean"] = float(rates.mean()) if k else 0.0
        return result

    # ------------------------------------------------------------------ records
    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        return self.x.unsqueeze(0), stack_buffers(self._statistics(), 1), ["global"]

    @torch.no_grad()
    def _statistics(self) -> Buffers:
        """Static BatchNorm: the global model's running statistics from one pass over the
        training data (cumulative averages, momentum None); other buffers unchanged."""
        model = self.ctx.model
        if not uses_batchnorm(model):
            return self.buffers
        data = self.ctx.data
        load_flat(model, self.x)
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        idx = torch.cat([s for s in data.train_idx])
        for start in range(0, len(idx), 1024):
            xb, _ = data.gather(idx[start: start + 1024])
            model(xb)
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        return {n: b.detach().clone() for n, b in model.named_buffers()}

    def info(self) -> dict[str, object]:
        return {"client_rates": [float(r) for r in self.fixed]
                if self.config.assignment == "fix" or self.config.client_rates else "dynamic"}

    def state(self) -> State:
        return {"x": self.x, "buffers": self.buffers, "clock": self.clock.state()}

    def load_state(self, state: State) -> None:
        self.x = state["x"].clone()
        self.buffers = section(state, "buffers")
        self.clock.load_state(section(state, "clock"))
