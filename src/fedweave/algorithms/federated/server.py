"""Server side of federated averaging: cohort options and server optimizers.

The server treats Δ = x − aggregate as a pseudo-gradient and applies a server optimizer to it
(Reddi et al. 2021, "Adaptive Federated Optimization"): plain SGD with lr 1 is FedAvg (McMahan
et al. 2017), momentum is FedAvgM, Adam/Yogi/Adagrad are FedOpt.
"""

from __future__ import annotations

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


class ServerOptimizer:
    """Holds a global flat model ``x[P]`` and applies pseudo-gradients Δ to it, with the same
    float operations as ``torch.optim``'s single-tensor SGD / Adam / Adagrad (so results equal
    them bit for bit) without ``torch.optim``, whose first use imports ``torch._dynamo``
    (about a second of start-up):

    - sgd:       x ← x − η Δ
    - momentum:  m ← Δ (first step), m ← μ m + Δ;  x ← x − η m                  (FedAvgM)
    - adam:      m ← m + (1−β1)(Δ − m);  v ← β2 v + (1−β2) Δ²;
                 x ← x − η/(1−β1ᵗ) · m / (√v / √(1−β2ᵗ) + τ)                   (FedAdam)
    - adagrad:   v ← v + Δ²;  x ← x − η Δ / (√v + τ)                            (FedAdagrad)
    - yogi:      m ← β1 m + (1−β1) Δ;  v ← v − (1−β2) Δ² sign(v − Δ²), v₀ = τ²;
                 x ← x − η m / (√v + τ)                      (FedYogi, Zaheer et al. 2018)
    """

    def __init__(self, x: torch.Tensor, cfg: ServerOptConfig) -> None:
        self.x = x.clone()
        self.cfg = cfg
        self.opt: dict[str, torch.Tensor] = {}

    def step(self, pseudo_grad: torch.Tensor) -> None:
        """x ← optimizer step on Δ (Δ = x − aggregate, so SGD with lr 1 sets x = aggregate)."""
        cfg, st, x = self.cfg, self.opt, self.x
        g = pseudo_grad.to(x.dtype)
        lr, kind = cfg.server_lr, cfg.server_optimizer
        if kind == "sgd":
            x.add_(g, alpha=-lr)
        elif kind == "momentum":
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = g.detach().clone()
            else:
                st["momentum_buffer"].mul_(cfg.server_momentum).add_(g)
            x.add_(st["momentum_buffer"], alpha=-lr)
        elif kind == "adam":
            b1, b2 = cfg.server_betas
            if not st:
                st.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(x),
                          exp_avg_sq=torch.zeros_like(x))
            st["step"] += 1
            t = float(st["step"])
            st["exp_avg"].lerp_(g, 1 - b1)
            st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (st["exp_avg_sq"].sqrt() / (1 - b2**t) ** 0.5).add_(cfg.server_eps)
            x.addcdiv_(st["exp_avg"], denom, value=-(lr / (1 - b1**t)))
        elif kind == "adagrad":
            if not st:
                st.update(step=torch.tensor(0.0), sum=torch.zeros_like(x))
            st["step"] += 1
            st["sum"].addcmul_(g, g, value=1)
            x.addcdiv_(g, st["sum"].sqrt().add_(cfg.server_eps), value=-lr)
        else:  # yogi
            b1, b2 = cfg.server_betas
            if not st:
                st.update(exp_avg=torch.zeros_like(x),
                          exp_avg_sq=torch.full_like(x, cfg.server_eps ** 2))
            st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
            g2 = g * g
            st["exp_avg_sq"].sub_((1 - b2) * g2 * torch.sign(st["exp_avg_sq"] - g2))
            x.sub_(lr * st["exp_avg"] / (st["exp_avg_sq"].sqrt() + cfg.server_eps))

    def state(self) -> State:
        return {"x": self.x.clone(), "opt": dict(self.opt)}

    def load_state(self, state: State) -> None:
        self.x.copy_(state["x"])
        self.opt = {k: v.clone() for k, v in section(state, "opt").items()}
