"""The ``privacy`` section: differential privacy (DP-FedAvg, DP-SGD) and its accountant."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedweave.config.base import RootView, Section, given_without


class PrivacyConfig(Section):
    """Differential privacy (``fedweave.privacy``). ``level: client`` is DP-FedAvg (McMahan et
    al. 2018): every client update x_i − x is clipped to L2 norm ``clip``, the server adds
    N(0, (σ·clip)²) to their sum and divides by the expected cohort m; cohorts are Poisson
    (each client with q = m/N) or fixed-size. ``level: sample`` is DP-SGD (Abadi et al. 2016)
    in local training: per-sample gradients clipped to ``clip``, summed, N(0, (σ·clip)²) added,
    divided by the expected batch b_i; batches are Poisson (each sample with q = b_i/n_i) or
    fixed-size. ε at ``delta`` comes from Google's dp-accounting (RDP or PLD accountant)."""

    level: Literal["client", "sample"] | None = Field(None, description="what is protected: "
                                                      "a client's whole data or one sample; "
                                                      "null = no privacy")
    clip: float = Field(1.0, gt=0, allow_inf_nan=True, description="C: L2 bound of a client "
                        "update (client) or a per-sample gradient (sample); .inf = no clipping "
                        "(then noise_multiplier must be 0 and ε is infinite)")
    noise_multiplier: float = Field(1.0, ge=0, description="σ: the noise std is σ·C")
    delta: float = Field(1e-5, gt=0, lt=1, description="δ of the reported (ε, δ)")
    sampling: Literal["poisson", "fixed"] = Field(
        "poisson", description="client: cohorts of independent draws with q = m/N (poisson) or "
        "m without replacement (fixed); sample: the same for each local batch")
    accountant: Literal["rdp", "pld"] = Field(
        "rdp", description="rdp: Rényi DP (Poisson, or sampling without replacement under "
        "replace-one adjacency); pld: privacy loss distributions (tighter, Poisson sampling "
        "only); both from Google's dp-accounting")
    target_epsilon: float | None = Field(None, gt=0, description="stop the run before the "
                                         "round that would take ε above this")

    def active(self) -> bool:
        return self.level is not None

    def check(self, config: RootView) -> None:
        """Privacy keys need a privacy level; each level needs an algorithm that releases what
        it protects."""
        p, alg = self, config.algorithm
        if p.level is None:
            keys = given_without(p, "level")
            if keys:
                raise ValueError(f"privacy.{keys[0]} is set but privacy.level is null, so the "
                                 "run would have no privacy at all: set privacy.level=client or "
                                 "sample, or remove the section")
            return
        if alg.kind != "federated":
            raise ValueError(f"privacy.level={p.level} protects federated clients; "
                             f"algorithm.name={alg.name} is {alg.kind}")
        if p.level == "client" and not alg.client_privacy:
            raise ValueError(f"privacy.level=client: algorithm.name={alg.name} releases more "
                             "than one clipped, noised aggregate per round; use fedavg or "
                             "fedprox, or privacy.level=sample")
        if p.level == "client" and config.aggregator.name is not None:
            raise ValueError("privacy.level=client aggregates by the clipped, noised sum: "
                             "remove aggregator.name")
        if p.clip == float("inf") and p.noise_multiplier > 0:
            raise ValueError("privacy.clip=inf bounds nothing, so no noise can make it private: "
                             "set privacy.noise_multiplier=0 or a finite clip")
        if p.accountant == "pld" and p.sampling == "fixed":
            raise ValueError("privacy.accountant=pld accounts Poisson sampling only: set "
                             "privacy.sampling=poisson or privacy.accountant=rdp")
