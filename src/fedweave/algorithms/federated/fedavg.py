"""FedAvg (McMahan et al. 2017) and FedProx (Li et al. 2020) with any server optimizer."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import (
    Algorithm,
    RoundResult,
    RunContext,
    draw_cohort,
    register_algorithm,
    tensors_with_prefix,
)
from fedweave.algorithms.federated.server import ServerOptConfig, ServerOptimizer
from fedweave.clock import job_time, node_profiles
from fedweave.config import AlgorithmConfig
from fedweave.population import Buffers, mean_buffers, stack_buffers, weighted_mean
from fedweave.training.local import LocalResult


class FedAvgConfig(ServerOptConfig):
    name: Literal["fedavg"] = "fedavg"
    prox_mu: float = Field(0.0, ge=0, description="FedProx proximal term μ")


class FedProxConfig(FedAvgConfig):
    name: Literal["fedprox"] = "fedprox"  # type: ignore[assignment]
    prox_mu: float = Field(0.01, ge=0)


class FederatedAlgorithm(Algorithm):
    """One global model; a cohort trains from it each round."""

    config: ServerOptConfig

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        self.server = ServerOptimizer(ctx.init_params, self.config)
        self.buffers: Buffers = dict(ctx.init_buffers)
        self.profile = node_profiles(ctx.config.clock, ctx.data.nodes, ctx.seed)

    def round_time(self, cohort: torch.Tensor, local: LocalResult, messages: int = 1) -> float:
        """Virtual seconds of a synchronous round: the slowest client's download + compute
        (steps · min(B, n_i) samples) + upload of ``messages`` models each way."""
        samples = local.steps * local.num_samples.clamp(max=self.ctx.config.train.batch_size)
        nbytes = messages * self.ctx.model_bytes
        times = job_time(self.profile, cohort.cpu(), samples.cpu().double(), nbytes, nbytes,
                         self.ctx.config.clock.latency_s)
        return float(torch.as_tensor(times).max())

    def cohort(self, r: int) -> torch.Tensor:
        cfg = self.config
        return draw_cohort(self.ctx, cfg.clients_per_round, cfg.fraction, r).to(self.ctx.device)

    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        return self.server.x.detach().unsqueeze(0), stack_buffers(self.buffers, 1), ["global"]

    def state(self) -> dict[str, torch.Tensor]:
        out = {f"server.{k}": v for k, v in self.server.state().items()}
        out.update({f"buffers.{k}": v for k, v in self.buffers.items()})
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.server.load_state(tensors_with_prefix(state, "server"))
        self.buffers = tensors_with_prefix(state, "buffers")


class FedAvg(FederatedAlgorithm):
    """Round: cohort ← sample(seed, r); x_i ← LocalSGD(x) (+ μ/2‖x_i − x‖² with FedProx);
    Δ = x − Σ_i (n_i/Σn) x_i; x ← ServerOpt(x, Δ)."""

    config: FedAvgConfig

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        cohort = self.cohort(r)
        x = self.server.x.detach()
        local = ctx.trainer.train(cohort, x.expand(len(cohort), -1),
                                  stack_buffers(self.buffers, len(cohort)), r, ctx.lr(r),
                                  prox_mu=self.config.prox_mu, center=x)
        self.server.step(x - weighted_mean(local.params, local.num_samples))
        self.buffers = mean_buffers(local.buffers, local.num_samples)
        traffic = len(cohort) * ctx.model_bytes
        return RoundResult(
            *local.mean_train(),
            bytes_up=traffic, bytes_down=traffic, sim_time=self.round_time(cohort, local),
        )


register_algorithm("fedavg", FedAvgConfig)(FedAvg)


@register_algorithm("fedprox", FedProxConfig)
class FedProx(FedAvg):
    """FedAvg whose local loss adds (μ/2)‖x_i − x‖² (Li et al. 2020); μ defaults to 0.01."""
