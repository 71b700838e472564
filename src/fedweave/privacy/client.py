"""Client-level differential privacy: DP-FedAvg (McMahan, Ramage, Talwar & Zhang 2018,
"Learning differentially private recurrent language models").

Each round samples a cohort — Poisson (every client independently with q = m/N, from
(seed, "cohort-poisson", round)) or fixed (m of N without replacement, the usual cohort) —
and the server releases

    x ← x + (Σ_{i ∈ cohort} clip_C(x_i − x) + z) / m,   z ~ N(0, (σ·C)²·I),
    clip_C(δ) = δ·min(1, C/‖δ‖)

with the fixed denominator m = ``algorithm.clients_per_round`` (the expected cohort, so the
cohort's size reveals nothing); the noise comes from (seed, "dp-noise", round). Every round
is one subsampled Gaussian release with noise multiplier σ, so ε after r rounds is the
accountant's ε of r compositions (``fedweave.privacy.accountant``). Rows a client never sends
(dropouts, stragglers, rejected uploads) count as zero updates. With σ = 0 and C = ∞ the rule
is Σ_i x_i / m: FedAvg's unweighted mean of a full fixed cohort, bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from fedweave.aggregators import Aggregator
from fedweave.config import AggregatorConfig, PrivacyConfig
from fedweave.privacy.accountant import check_target, epsilon
from fedweave.rng import numpy_rng, torch_generator


def poisson_cohort(seed: int, round_index: int, nodes: int, q: float) -> torch.Tensor:
    """Sorted clients, each included independently with probability ``q``."""
    draw = numpy_rng(seed, "cohort-poisson", round_index).random(nodes) < q
    return torch.from_numpy(draw).nonzero().flatten()


class DPFedAvg(Aggregator):
    """The server's clipped, noised sum over the expected cohort (module docstring)."""

    def __init__(self, privacy: PrivacyConfig, expected: int, seed: int) -> None:
        super().__init__(AggregatorConfig(name=None))
        self.privacy, self.expected, self.seed = privacy, expected, seed
        self.round = 0

    def single(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor
               ) -> torch.Tensor:
        clip, sigma, m = self.privacy.clip, self.privacy.noise_multiplier, self.expected
        if math.isfinite(clip) and len(rows):
            delta = rows - center
            norm = delta.norm(dim=1, keepdim=True)
            rows = torch.where(norm > clip, center + delta * (clip / norm), rows)
        total = rows.sum(0)
        if len(rows) != m:
            total = total + (m - len(rows)) * center
        if sigma:
            noise = torch.randn(center.shape, generator=torch_generator(
                self.seed, "dp-noise", self.round), dtype=center.dtype)
            total = total + (sigma * clip) * noise.to(center.device)
        return total / m


class ClientLedger:
    """ε of DP-FedAvg: after r rounds, r releases of the cohort's subsampled Gaussian."""

    def __init__(self, privacy: PrivacyConfig, nodes: int, expected: int) -> None:
        self.privacy, self.nodes, self.expected = privacy, nodes, expected
        self.rounds = 0
        check_target(privacy, self.next_epsilon())

    def epsilon(self, rounds: int) -> float:
        p = self.privacy
        return epsilon(p.accountant, p.sampling, p.noise_multiplier, rounds, p.delta,
                       self.nodes, self.expected)

    def update(self, round_index: int) -> float:
        """After round ``round_index`` (0-based): the ε spent so far."""
        self.rounds = round_index + 1
        return self.epsilon(self.rounds)

    def next_epsilon(self) -> float:
        """The ε one more round would bring the total to."""
        return self.epsilon(self.rounds + 1)

    def record(self) -> dict[str, Any]:
        """summary.json's ``privacy`` entry (ε null when infinite: no noise)."""
        p = self.privacy
        eps = self.epsilon(self.rounds)
        return {"privacy": {"level": "client", "epsilon": eps if math.isfinite(eps) else None,
                            "delta": p.delta, "accountant": p.accountant,
                            "sampling": p.sampling, "noise_multiplier": p.noise_multiplier,
                            "clip": p.clip if math.isfinite(p.clip) else None,
                            "expected_cohort": self.expected, "clients": self.nodes,
                            "releases": self.rounds}}
