"""Functional optimizers on stacked flat parameters ``[K, P]`` (one row per node).

Both local-training engines use these, so the loop and vectorized engines differ only in how
gradients are computed. Semantics follow ``torch.optim.SGD`` / ``torch.optim.Adam``
(Kingma & Ba 2015): weight decay is added to the gradient, momentum buffers start at zero.
"""

from __future__ import annotations

import torch

from fedweave.config import TrainConfig

State = dict[str, torch.Tensor]


class FunctionalOptimizer:
    """``step(params, grads, state, lr, active)`` updates only the ``active`` rows."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg

    def init(self, params: torch.Tensor) -> State:
        state: State = {"step": torch.zeros(params.shape[0], dtype=params.dtype,
                                            device=params.device)}
        if self.cfg.optimizer == "adam":
            state["exp_avg"] = torch.zeros_like(params)
            state["exp_avg_sq"] = torch.zeros_like(params)
        elif self.cfg.momentum > 0:
            state["momentum"] = torch.zeros_like(params)
        return state

    def step(self, params: torch.Tensor, grads: torch.Tensor, state: State, lr: float,
             active: torch.Tensor | None = None, mask: torch.Tensor | None = None
             ) -> torch.Tensor:
        """One update. ``mask`` (same shape as params, 0/1) keeps pruned weights at zero."""
        cfg = self.cfg
        every = active is None or bool(active.all())
        act = (torch.ones(params.shape[0], dtype=torch.bool, device=params.device)
               if active is None else active)
        rows = act.view(-1, 1)

        def keep(new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
            return new if every else torch.where(rows, new, old)

        g = grads + cfg.weight_decay * params if cfg.weight_decay else grads
        state["step"] = state["step"] + act.to(params.dtype)
        if cfg.optimizer == "adam":
            b1, b2, eps = 0.9, 0.999, 1e-8
            m = keep(b1 * state["exp_avg"] + (1 - b1) * g, state["exp_avg"])
            v = keep(b2 * state["exp_avg_sq"] + (1 - b2) * g * g, state["exp_avg_sq"])
            state["exp_avg"], state["exp_avg_sq"] = m, v
            t = state["step"].clamp(min=1).view(-1, 1)
            update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
        elif cfg.momentum > 0:
            buf = keep(cfg.momentum * state["momentum"] + g, state["momentum"])
            state["momentum"] = buf
            update = g + cfg.momentum * buf if cfg.nesterov else buf
        else:
            update = g
        new = keep(params - lr * update, params)
        return new * mask if mask is not None else new


def scheduled_lr(cfg: TrainConfig, round_index: int) -> float:
    """Learning rate of a round: constant, or StepLR (× gamma every ``step_size`` rounds)."""
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** (round_index // cfg.step_size)
    return cfg.lr
