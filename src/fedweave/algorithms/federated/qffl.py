"""q-FFL by q-FedAvg (Li, Sanjabi, Beirami & Smith 2020, "Fair Resource Allocation in
Federated Learning", ICLR), Algorithm 2.

q-FFL minimises f_q(w) = Σ_k p_k F_k^{q+1}(w)/(q+1): the larger q, the more the clients with
a high loss count, so the accuracy across clients becomes more uniform (q = 0 is FedAvg's
objective). q-FedAvg: every member k of the cohort evaluates the server model on its training
data, F_k = F_k(w^t) (mean cross-entropy, evaluation mode), runs local SGD to w̄_k, and

    Δw_k = L (w^t − w̄_k)
    Δ_k  = F_k^q Δw_k
    h_k  = q F_k^{q−1} ‖Δw_k‖² + L F_k^q
    w^{t+1} = w^t − Σ_k Δ_k / Σ_k h_k

with L = 1/η (η: the local learning rate of the round, as the paper sets it). The pseudo-
gradient Σ Δ_k / Σ h_k goes through the server optimizer (plain SGD with lr 1, the default,
is the paper's update). With q = 0: h_k = L and w^{t+1} = (1/|S|) Σ_k w̄_k, the unweighted
mean of the members' models (the paper's FedAvg with clients sampled ∝ n_k; here the cohort is
sampled uniformly). q defaults to 1 (the paper's choice for Synthetic and Sent140; Vehicle 5,
Shakespeare 0.001). No per-client state. Robust aggregators and client-level DP are refused
(the update weights every member by its own loss).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.base import FederatedAlgorithm
from fedweave.algorithms.federated.server import ServerOptConfig
from fedweave.core.population import mean_buffers, stack_buffers


class QFFLConfig(ServerOptConfig):
    name: Literal["qffl"] = "qffl"
    q: float = Field(1.0, ge=0, description="q-FFL's fairness exponent q (0 = FedAvg's "
                     "objective; Li et al. 2020 use 0.001 to 5 by dataset)")


def qfedavg_step(x: torch.Tensor, y: torch.Tensor, losses: torch.Tensor, q: float,
                 lipschitz: float) -> torch.Tensor:
    """Σ_k Δ_k / Σ_k h_k (the pseudo-gradient: w^{t+1} = x − it) for models ``y[K, P]``
    trained from ``x`` and the members' losses F_k at ``x`` (float64 ``[K]``)."""
    dw = lipschitz * (x - y)
    # + 1e-10 as in the paper's code (no 0^(q−1) at a zero loss)
    f = losses.to(torch.float64).to(x.device).clamp(min=0) + 1e-10
    fq = f ** q
    h = lipschitz * fq
    if q:
        h = h + q * f ** (q - 1) * dw.to(torch.float64).square().sum(1)
    weights = (fq / h.sum()).to(x.dtype)
    return weights @ dw


@register_algorithm("qffl", QFFLConfig)
class QFFL(FederatedAlgorithm):
    """Round: F_k = loss of w on k's data; w̄_k ← LocalSGD(w); w ← w − Σ F_k^q L(w − w̄_k) /
    Σ (q F_k^{q−1} L²‖w − w̄_k‖² + L F_k^q) (module docstring)."""

    config: QFFLConfig

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach()
        losses = self.client_losses(plan.clients)
        start, buffers = self.start(len(clients))
        lr = ctx.lr(r)
        local = ctx.trainer.train(clients, start, buffers, r, lr)
        if len(clients):
            self.server.step(qfedavg_step(x, local.params, losses, self.config.q, 1.0 / lr))
            self.buffers = mean_buffers(local.buffers, local.num_samples)
        return self.result(plan, local)

    def client_losses(self, clients: torch.Tensor) -> torch.Tensor:
        """F_k(w): mean cross-entropy of the server model on each client's training shard
        (float64 ``[K]``, evaluation mode)."""
        data, engine = self.ctx.data, self.ctx.engine
        x = self.server.x.detach().unsqueeze(0)
        buffers = stack_buffers(self.buffers, 1)
        out = torch.zeros(len(clients), dtype=torch.float64)
        for k, node in enumerate(clients.tolist()):
            loss, _ = engine.evaluate(x, buffers, *data.take_inputs(data.train_idx[node]))
            out[k] = float(loss[0])
        return out
