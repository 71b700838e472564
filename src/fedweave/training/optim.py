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

    def step(self, params: torch.Tensor, grads: torch.Tensor, state: State,
             lr: float | torch.Tensor, active: torch.Tensor | None = None,
             mask: torch.Tensor | None = None, inplace: bool = False) -> torch.Tensor:
        """One update; returns the new ``params``. ``lr`` is a float or a per-row tensor
        [K, 1]; ``mask`` (0/1, like params) keeps pruned weights at zero. Optimizer state is
        updated in place. With ``inplace`` the caller hands over ``params`` and ``grads`` (both
        are overwritten): no [K, P] tensor is allocated per step, which on a CPU is most of the
        cost of a step for a large stack (fresh allocations page-fault)."""
        cfg = self.cfg
        every = active is None or bool(active.all())
        act = (torch.ones(params.shape[0], dtype=torch.bool, device=params.device)
               if active is None else active)
        rows = act.view(-1, 1)
        g = grads
        if cfg.weight_decay:
            g = (grads.add_(params, alpha=cfg.weight_decay) if inplace
                 else torch.add(grads, params, alpha=cfg.weight_decay))
        state["step"] += act.to(params.dtype)
        if cfg.optimizer == "adam":
            b1, b2, eps = 0.9, 0.999, 1e-8
            m, v = state["exp_avg"], state["exp_avg_sq"]
            if every:
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
            else:  # the same float operations as above: a row's update never depends on
                # which other rows step (engines and process counts agree bit for bit)
                m.copy_(torch.where(rows, (m * b1).add_(g, alpha=1 - b1), m))
                v.copy_(torch.where(rows, (v * b2).addcmul_(g, g, value=1 - b2), v))
            t = state["step"].clamp(min=1).view(-1, 1)
            update = (m / (1 - b1**t)).div_((v / (1 - b2**t)).sqrt_().add_(eps))
        elif cfg.momentum > 0:
            buf = state["momentum"]
            if every:
                buf.mul_(cfg.momentum).add_(g)
            else:
                buf.copy_(torch.where(rows, cfg.momentum * buf + g, buf))
            update = torch.add(g, buf, alpha=cfg.momentum) if cfg.nesterov else buf
        else:
            update = g
        if inplace:  # inactive rows get a zero step size instead of a torch.where pass
            if every and not isinstance(lr, torch.Tensor):
                new = params.add_(update, alpha=-lr)
            else:
                new = params.addcmul_(rows.to(params.dtype) * lr, update, value=-1)
        else:
            if isinstance(lr, torch.Tensor):
                new = torch.addcmul(params, lr, update, value=-1)
            else:
                new = torch.add(params, update, alpha=-lr)
            if not every:
                new = torch.where(rows, new, params)
        return new.mul_(mask) if mask is not None else new


def scheduled_lr(cfg: TrainConfig, round_index: int) -> float:
    """Learning rate of a round: constant, StepLR (× gamma every ``step_size`` rounds) or
    MultiStepLR (× gamma after each of the ``milestones`` rounds)."""
    if cfg.scheduler == "step":
        return cfg.lr * cfg.gamma ** (round_index // cfg.step_size)
    if cfg.scheduler == "multistep":
        return cfg.lr * cfg.gamma ** sum(round_index >= m for m in cfg.milestones)
    return cfg.lr
