"""MOON (Li, He & Song 2021, "Model-Contrastive Federated Learning", CVPR), Algorithm 1.

FedAvg whose clients train on

    ℓ = CE(f(x; θ), y) + μ · ℓ_con,
    ℓ_con = −log [ exp(sim(z, z_glob)/τ) / (exp(sim(z, z_glob)/τ) + exp(sim(z, z_prev)/τ)) ]

where z is the representation of the local model being trained (the input of its last Linear
layer, ``training.representation``), z_glob the server model's and z_prev the client's
previous local model's representation of the same sample, and sim the cosine similarity:
each client pulls its representation towards the global model's and away from its own last
one (``training.objectives.ModelContrastive``). z_glob and z_prev come from fixed models in
evaluation mode, as in the paper's code, so they are computed once per round over the cohort's
shards; with ``data.augment`` they would differ per step, so augmentation is refused.

A model without hidden layers (``logistic``) has the input itself as its representation: z
does not depend on θ, ℓ_con has no gradient and MOON trains as FedAvg.

Per-client state: the previous local model of every client that has trained (a
``core.client_store.ClientStore`` row of P floats, 4·P bytes per client); a client's first
round uses the initial model, as the paper's code does. Its representation is computed with
the server model's normalisation buffers (only the parameters are kept per client).

Defaults from the paper: τ = 0.5 and μ = 1 (its CIFAR-100 and Tiny-ImageNet value; CIFAR-10
uses μ = 5). μ = 0 trains exactly as FedAvg (on the loop and vectorized engines; the fused
engine trains MOON's data term through its generic ``vmap`` step, so there μ = 0 matches its
fused FedAvg up to float rounding). The server aggregates like FedAvg (any
``aggregator``, client-level DP); DP-SGD (``privacy.level=sample``) is refused.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.base import FederatedAlgorithm
from fedweave.algorithms.federated.server import ServerOptConfig
from fedweave.config import RootView
from fedweave.context import RunContext
from fedweave.core.client_store import ClientStore
from fedweave.core.population import mean_buffers
from fedweave.core.state import State, section
from fedweave.training.objectives import ModelContrastive, Objective
from fedweave.training.representation import RepresentationTap


class MoonConfig(ServerOptConfig):
    name: Literal["moon"] = "moon"
    uses_aggregator: ClassVar[bool] = True
    client_privacy: ClassVar[bool] = True
    mu: float = Field(1.0, ge=0, description="MOON's weight μ of the model-contrastive loss "
                      "(Li et al. 2021: 5 on CIFAR-10, 1 on CIFAR-100 and Tiny-ImageNet)")
    tau: float = Field(0.5, gt=0, description="MOON's temperature τ of the contrastive loss")

    def check(self, config: RootView) -> None:
        super().check(config)
        if config.data.augment:
            raise ValueError("algorithm.name=moon computes the round's contrastive targets on "
                             "un-augmented samples: set data.augment=false")
        if config.privacy.level == "sample":
            raise ValueError("algorithm.name=moon does not support privacy.level=sample (its "
                             "loss reads the representation outside DP-SGD's per-sample "
                             "gradients): use privacy.level=client")


@register_algorithm("moon", MoonConfig)
class Moon(FederatedAlgorithm):
    """Round: targets z_glob, z_prev on the cohort's samples; θ_i ← LocalSGD(x) on CE + μ·ℓ_con;
    prev_i ← θ_i; x ← ServerOpt(x, x − aggregate(θ_i; n_i)) (module docstring)."""

    config: MoonConfig

    def __init__(self, ctx: RunContext, config: MoonConfig) -> None:
        super().__init__(ctx, config)
        x = self.server.x
        self.tap = RepresentationTap(ctx.model)
        self.loss = ModelContrastive(self.config.mu, self.config.tau, self.tap)
        self.prev = ClientStore(ctx.data.nodes, x.numel(), x.dtype, x.device)

    def targets(self, clients: torch.Tensor, x: torch.Tensor) -> None:
        """z_glob (server model) and z_prev (each client's previous model) of every training
        sample of the cohort, handed to the contrastive loss."""
        ctx, data = self.ctx, self.ctx.data
        prev = self.prev.gather(clients, ctx.init_params)
        shards = [data.train_idx[int(c)] for c in clients.tolist()]
        idx = torch.cat(shards).to(data.x.device) if shards else \
            torch.zeros(0, dtype=torch.int64, device=data.x.device)
        inputs, _ = data.gather(idx)
        z_glob = self.tap.representations(ctx.layout, x, self.buffers, inputs)
        z_prev = [self.tap.representations(ctx.layout, prev[j], self.buffers, part)
                  for j, part in enumerate(inputs.split([len(s) for s in shards]))]
        self.loss.set_targets(idx, z_glob, torch.cat(z_prev) if z_prev else z_glob,
                              len(data.x))

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach()
        self.targets(clients, x)
        start, buffers = self.start(len(clients))
        with self.tap.on():
            local = ctx.trainer.train(clients, start, buffers, r, ctx.lr(r),
                                      Objective(data=self.loss))
        if len(clients) or self.ledger is not None:
            self.server.step(x - self.aggregate(local.params, local.num_samples, x))
        if len(clients):
            self.prev.scatter(clients, local.params)
            self.buffers = mean_buffers(local.buffers, local.num_samples)
        return self.result(plan, local)

    def state(self) -> State:
        return {**super().state(), "prev_models": self.prev.state()}

    def load_state(self, state: State) -> None:
        super().load_state(state)
        self.prev.load(section(state, "prev_models"))
