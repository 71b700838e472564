"""CHOCO-SGD: decentralized SGD with compressed gossip and error feedback (Koloskova, Stich
and Jaggi, ICML 2019, "Decentralized stochastic optimization and gossip algorithms with
compressed communication", Algorithm 2).

Every node i keeps its model x_i and a public estimate x̂_i of it; each neighbour j holds the
same x̂_i, built from the compressed differences i sent. A step:

    x_i ← x_i − lr·u_i                           (local optimizer step, u_i = g_i + ...)
    q_i = Q(x_i − x̂_i)                           (compressed; sent to every neighbour)
    x̂_j ← x̂_j + q_j   for j ∈ N_i ∪ {i}          (the copies of the estimates)
    x_i ← x_i + γ Σ_j W_ij (x̂_j − x̂_i)          (consensus on the estimates)

The error x_i − x̂_i that Q leaves out is not lost: it stays in the next difference (error
feedback). With Q = identity and γ = 1 this is D-SGD. Estimates start at zero, as in the paper.

Compressors Q (``compressor``), on each node's difference vector v ∈ R^P:
- ``topk``: the k = ⌈ratio·P⌉ entries of largest |v| (values and 32-bit indices sent);
- ``randk``: k entries chosen uniformly, from the stream (seed, "choco", node, step) that the
  receiver can draw too (values and an 8-byte seed sent);
- ``qsgd``: ‖v‖·sign(v_l)·ξ_l/(sτ) with ξ_l = ⌊s|v_l|/‖v‖ + u_l⌋, u ~ U(0,1), rescaled by
  τ = 1 + min(P/s², √P/s) into a contraction as in the paper (QSGD: Alistarh et al. 2017; one
  sign bit and ⌈log2(s+1)⌉ bits per entry, plus the norm);
- ``none``: v itself.
The consensus step γ must shrink with the quality ω of Q (E‖Q(v) − v‖² ≤ (1 − ω)‖v‖²):
ω = k/P for randk, 1/τ for qsgd; topk is at least as good as randk. Every message is
exchanged on every edge at every step (a lost or skipped q would leave the
neighbours' copy of x̂_i wrong for good, so ``clock.link_drop`` is refused).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.decentralized.base import DecentralizedConfig, LocalOptimizerAlgorithm
from fedweave.rng import torch_generator

if TYPE_CHECKING:
    from fedweave.config import RootView


class ChocoConfig(DecentralizedConfig):
    name: Literal["choco"] = "choco"
    gamma: float = Field(0.5, gt=0, le=1, description="γ: consensus step size on the "
                         "public estimates (1 with compressor none is D-SGD)")
    compressor: Literal["topk", "randk", "qsgd", "none"] = Field(
        "topk", description="Q: topk / randk keep ⌈ratio·P⌉ entries; qsgd quantizes every "
        "entry to `levels` levels; none sends the difference itself")
    ratio: float = Field(0.1, gt=0, le=1, description="topk / randk: fraction of the P "
                         "entries sent")
    levels: int = Field(16, ge=1, le=2**16, description="qsgd: s, the number of levels")

    def check(self, config: RootView) -> None:
        if config.clock.link_drop > 0:
            raise ValueError("algorithm.name=choco needs every compressed difference to "
                             "arrive (a lost one corrupts the neighbours' estimates for good): "
                             "set clock.link_drop=0")


@register_algorithm("choco", ChocoConfig)
class Choco(LocalOptimizerAlgorithm):
    """Local optimizer step, compressed difference to the public estimate, gossip on the
    estimates (see the module docstring)."""

    config: ChocoConfig
    message_keys = ("q",)

    def init_state(self) -> None:
        self.opt_state = self.optimizer.init(self.x)
        self.xhat = torch.zeros_like(self.x)
        self.q = torch.zeros_like(self.x)
        self.copies["xhat"] = torch.zeros(len(self.slots), self.x.shape[1], dtype=self.x.dtype,
                                          device=self.x.device)

    def kept(self) -> int:
        """k, the entries topk / randk send."""
        return max(1, math.ceil(self.config.ratio * self.x.shape[1]))

    def qsgd_scale(self) -> float:
        """qsgd's rescaling τ = 1 + min(P/s², √P/s)."""
        p, s = self.x.shape[1], self.config.levels
        return 1 + min(p / s**2, math.sqrt(p) / s)

    def message_bytes(self) -> int:
        p, value = self.ctx.layout.total, self.ctx.init_params.element_size()
        c = self.config
        if c.compressor == "topk":
            return self.kept() * (value + 4)
        if c.compressor == "randk":
            return self.kept() * value + 8
        if c.compressor == "qsgd":
            return math.ceil(p * (1 + math.ceil(math.log2(c.levels + 1))) / 8) + value
        return p * value

    def compress(self, v: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Q applied to each row of ``v`` (the rows of global ``nodes``)."""
        c = self.config
        if c.compressor == "none":
            return v
        if c.compressor == "topk":
            idx = v.abs().topk(self.kept(), dim=1).indices
            return torch.zeros_like(v).scatter_(1, idx, v.gather(1, idx))
        out = torch.zeros_like(v)
        for row, node in enumerate(nodes.tolist()):  # one stream per (node, step)
            g = torch_generator(self.ctx.seed, "choco", node, int(self.steps_done[node]))
            if c.compressor == "randk":
                idx = torch.randperm(v.shape[1], generator=g)[: self.kept()].to(v.device)
                out[row, idx] = v[row, idx]
            else:
                norm = v[row].norm()
                if norm > 0:
                    u = torch.rand(v.shape[1], generator=g, dtype=v.dtype).to(v.device)
                    xi = torch.floor(c.levels * v[row].abs() / norm + u)
                    out[row] = norm * v[row].sign() * xi / (c.levels * self.qsgd_scale())
        return out

    def local_update(self, active: torch.Tensor, g: torch.Tensor, lr: torch.Tensor) -> None:
        self.sgd_step(active, g, lr)
        rows = torch.nonzero(active).flatten()
        self.q = torch.zeros_like(self.x)
        self.q[rows] = self.compress(self.x[rows] - self.xhat[rows], self.nodes[rows])

    def message(self, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"q": self.q[self.own[slots]]}

    def receive(self, slots: torch.Tensor, msg: dict[str, torch.Tensor]) -> None:
        self.copies["xhat"][slots] += msg["q"]

    def combine(self, active: torch.Tensor, due: torch.Tensor, lr: torch.Tensor,
                fresh: bool) -> None:
        self.xhat = self.xhat + self.q  # q is zero on the nodes that did not step
        gossip = self.mix(self.xhat, "xhat", False) - self.xhat
        self.x = self.select(active, self.x + self.config.gamma * gossip, self.x)

    def algorithm_state(self) -> dict[str, torch.Tensor]:
        return {**super().algorithm_state(), "xhat": self.xhat}

    def load_algorithm_state(self, state: dict[str, torch.Tensor]) -> None:
        super().load_algorithm_state(state)
        self.xhat = state["xhat"]
