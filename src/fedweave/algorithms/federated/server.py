"""Server side of federated averaging: cohort options and server optimizers.

The server treats Δ = x − Σ_i (n_i/Σn) x_i as a pseudo-gradient and applies any
``torch.optim`` optimizer to it (Reddi et al. 2021, "Adaptive Federated Optimization"): plain SGD
with lr 1 is FedAvg (McMahan et al. 2017), momentum is FedAvgM, Adam/Yogi/Adagrad are FedOpt.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.federated.sampling import CohortConfig
from fedweave.core.state import State, section


class ServerOptConfig(CohortConfig):
    server_optimizer: Literal["sgd", "momentum", "adam", "yogi", "adagrad"] = Field(
        "sgd", description="optimizer applied to the pseudo-gradient Δ = x − aggregate "
        "(sgd with server_lr 1 is plain FedAvg; momentum = FedAvgM; adam/yogi/adagrad = FedOpt)")
    server_lr: float = Field(1.0, gt=0, description="server learning rate η_g")
    server_momentum: float = Field(0.9, ge=0, lt=1,
                                   description="server_optimizer momentum: its momentum")
    server_betas: tuple[float, float] = Field(
        (0.9, 0.99), description="server_optimizer adam/yogi: (β1, β2)")
    server_eps: float = Field(1e-3, gt=0, description="adaptivity τ of FedOpt (adam, yogi, "
                              "adagrad)")


class Yogi(torch.optim.Optimizer):
    """Yogi (Zaheer et al. 2018) as used by FedYogi: v ← v − (1−β2)·g²·sign(v − g²)."""

    def __init__(self, params: Iterable[torch.Tensor], lr: float, betas: tuple[float, float],
                 eps: float) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["exp_avg"] = torch.zeros_like(p)
                    st["exp_avg_sq"] = torch.full_like(p, group["eps"] ** 2)
                g = p.grad
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                g2 = g * g
                st["exp_avg_sq"].sub_((1 - b2) * g2 * torch.sign(st["exp_avg_sq"] - g2))
                p.sub_(group["lr"] * st["exp_avg"] / (st["exp_avg_sq"].sqrt() + group["eps"]))


class ServerOptimizer:
    """Holds a global flat model ``x[P]`` and applies pseudo-gradients to it."""

    def __init__(self, x: torch.Tensor, cfg: ServerOptConfig) -> None:
        self.x = torch.nn.Parameter(x.clone(), requires_grad=False)
        params = [self.x]
        lr, kind = cfg.server_lr, cfg.server_optimizer
        self.opt: torch.optim.Optimizer
        if kind == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr)
        elif kind == "momentum":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=cfg.server_momentum)
        elif kind == "adam":
            self.opt = torch.optim.Adam(params, lr=lr, betas=cfg.server_betas,
                                        eps=cfg.server_eps)
        elif kind == "adagrad":
            self.opt = torch.optim.Adagrad(params, lr=lr, eps=cfg.server_eps)
        else:
            self.opt = Yogi(params, lr=lr, betas=cfg.server_betas, eps=cfg.server_eps)

    def step(self, pseudo_grad: torch.Tensor) -> None:
        """x ← optimizer step on Δ (Δ = x − aggregate, so SGD with lr 1 sets x = aggregate)."""
        self.x.grad = pseudo_grad.to(self.x.dtype)
        self.opt.step()
        self.x.grad = None

    def state(self) -> State:
        st = self.opt.state.get(self.x, {})
        return {"x": self.x.detach().clone(), "opt": dict(st)}

    def load_state(self, state: State) -> None:
        with torch.no_grad():
            self.x.copy_(state["x"])
        opt_state = section(state, "opt")
        if opt_state:
            self.opt.state[self.x] = {k: v.clone() for k, v in opt_state.items()}
