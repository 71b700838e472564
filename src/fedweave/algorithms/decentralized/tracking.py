"""Gradient tracking (DSGT / DIGing: Nedić, Olshevsky & Shi 2017; Pu & Nedić 2021) and
D2 / exact diffusion (Tang et al. 2018; Yuan et al. 2019). Both remove the
bias D-SGD has on heterogeneous data (g = ∇f_i + λx + wd·x, no local optimizer state):

Gradient tracking, y_{-1} = g_{-1} = 0:
    y_i ← Σ_j W_ij y_j + g_i(x_i) − g_i^old          (tracks the average gradient)
    x_i ← Σ_j W_ij x_j − lr·y_i

D2 (first step x½ = x − lr·g):
    x½_i = 2x_i − x_i^prev − lr(g_i − g_i^prev);  x_i ← Σ_j W_ij x½_j
    ``exact_diffusion: true`` mixes with (I + W)/2 instead (needed when λ_min(W) ≤ −1/3).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.decentralized.base import DecentralizedAlgorithm, PeriodicConfig


class GradientTrackingConfig(PeriodicConfig):
    name: Literal["gradient_tracking"] = "gradient_tracking"


class D2Config(PeriodicConfig):
    name: Literal["d2"] = "d2"
    exact_diffusion: bool = Field(False, description="mix with (I + W)/2")


def _decayed(g: torch.Tensor, x: torch.Tensor, wd: float) -> torch.Tensor:
    return g + wd * x if wd else g


@register_algorithm("gradient_tracking", GradientTrackingConfig)
class GradientTracking(DecentralizedAlgorithm):
    """x ← Wx − lr·y; y ← Wy + g_new − g_old (both mixings on the messages (x, y))."""

    mixes = True
    message_keys = ("x", "y")

    def init_state(self) -> None:
        self.y = torch.zeros_like(self.x)       # Σ_j W_ij y_j from the last combine
        self.g_old = torch.zeros_like(self.x)
        self.new_copies("x", self.ctx.init_params)
        self.new_copies("y", torch.zeros_like(self.ctx.init_params))

    def local_update(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        g = _decayed(g, self.x, self.ctx.config.train.weight_decay)
        self.y = self.select(active, self.y + g - self.g_old, self.y)
        self.g_old = self.select(active, g, self.g_old)

    def message(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        own = self.own[slots]
        return {"x": self.x[own], "y": self.y[own]}

    def combine(self, active: torch.Tensor, due: torch.Tensor, lr: torch.Tensor,
                fresh: bool) -> None:
        x = self.mix(self.x, "x", fresh) - lr * self.y
        y = self.mix(self.y, "y", fresh)
        self.x = self.select(active, x, self.x)
        self.y = self.select(active, y, self.y)

    def algorithm_state(self) -> dict[str, torch.Tensor]:
        return {"y": self.y, "g_old": self.g_old}

    def load_algorithm_state(self, state: dict[str, torch.Tensor]) -> None:
        self.y, self.g_old = state["y"], state["g_old"]


@register_algorithm("d2", D2Config)
class D2(DecentralizedAlgorithm):
    """x½ = 2x_t − x_{t−1} − lr(g_t − g_{t−1}); x_{t+1} = W x½."""

    config: D2Config
    mixes = True

    def init_state(self) -> None:
        self.x_prev = self.x.clone()
        self.g_prev = torch.zeros_like(self.x)
        self.started = torch.zeros(self.rows, 1, dtype=torch.bool, device=self.x.device)
        self.new_copies("x", self.ctx.init_params)

    def local_update(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        g = _decayed(g, self.x, self.ctx.config.train.weight_decay)
        a = active.view(-1, 1)
        if bool(self.started.all()):
            half = 2 * self.x - self.x_prev - lr * (g - self.g_prev)
        else:
            half = torch.where(self.started, 2 * self.x - self.x_prev - lr * (g - self.g_prev),
                               self.x - lr * g)
        self.x_prev = self.select(active, self.x, self.x_prev)
        self.g_prev = self.select(active, g, self.g_prev)
        self.started = self.started | a
        self.x = self.select(active, half, self.x)

    def combine(self, active: torch.Tensor, due: torch.Tensor, lr: torch.Tensor,
                fresh: bool) -> None:
        mixed = self.mix(self.x, "x", fresh)
        if self.config.exact_diffusion:
            mixed = 0.5 * (self.x + mixed)
        self.x = self.select(active, mixed, self.x)

    def algorithm_state(self) -> dict[str, torch.Tensor]:
        return {"x_prev": self.x_prev, "g_prev": self.g_prev, "started": self.started}

    def load_algorithm_state(self, state: dict[str, torch.Tensor]) -> None:
        self.x_prev, self.g_prev, self.started = state["x_prev"], state["g_prev"], state[
            "started"]
