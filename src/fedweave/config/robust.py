"""The ``attack`` section: Byzantine nodes and what they send."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedweave.config.base import RootView, Section, changed, given_without


class AttackConfig(Section):
    """Byzantine nodes (``fedweave.robust``): which nodes attack and what they send. The
    attackers are fixed for the run (``nodes``, or ⌊fraction·N⌉ nodes drawn from (seed,
    "attackers")) and recorded in summary.json ``attack.nodes``. Model attacks replace the
    update Δ = x_sent − x_start of an attacker (a client's trained model minus the global model;
    a peer's model after its local step minus before it): gaussian Δ ~ N(0, std²), sign_flip
    −k·Δ, scale k·Δ (model replacement), alie μ − z·σ of the honest updates (Baruch et al.
    2019). Data attacks corrupt the attackers' training shards: label_flip y → C−1−y,
    noisy_labels (a label_fraction of labels to other classes), input_noise (Gaussian noise
    of std ``std`` on the normalised inputs)."""

    name: Literal["label_flip", "noisy_labels", "input_noise", "gaussian", "sign_flip", "scale",
                  "alie"] | None = Field(None, description="the attack; null = none")
    fraction: float = Field(0.0, ge=0, le=1, description="share of data.nodes that attack "
                            "(rounded to the nearest count)")
    nodes: list[int] | None = Field(None, description="explicit attacker node ids (instead "
                                    "of fraction)")
    std: float = Field(100.0, gt=0, description="gaussian: std of the noise sent as the "
                       "update (parameter units); input_noise: std of the noise added to the "
                       "normalised inputs (DICE's anomaly setting: 100)")
    scale: float = Field(10.0, gt=0, description="k: sign_flip sends −k·Δ, scale sends k·Δ")
    z: float | None = Field(None, gt=0, description="alie: z of μ − z·σ; null = z_max of "
                            "Baruch et al. from the n rows and m attackers aggregated together")
    label_fraction: float = Field(0.5, gt=0, lt=1, description="noisy_labels: share of each "
                                  "attacker's training labels (rounded up) replaced by another "
                                  "class (uniform)")

    def active(self) -> bool:
        return self.name is not None

    def check(self, config: RootView) -> None:
        """Attack keys need an attack name; attackers need nodes to attack."""
        kind = config.algorithm.kind
        att, name = self, self.name
        if name is None:
            keys = given_without(att, "name")
            if keys:
                raise ValueError(f"attack.{keys[0]} is set but attack.name is null: name "
                                 "the attack or remove the attack section")
            return
        if kind == "centralized":
            raise ValueError(f"attack.name={name}: the centralized reference has no nodes to "
                             "attack it")
        if att.nodes is not None and "fraction" in changed(att):
            raise ValueError("set attack.nodes or attack.fraction, not both")
        if att.nodes is not None:
            twice = sorted({i for i in att.nodes if att.nodes.count(i) > 1})
            if twice:
                raise ValueError(f"attack.nodes names node {twice[0]} more than once: list each "
                                 "attacker once")
            n = config.data.nodes
            outside = [i for i in att.nodes if not 0 <= i < n]
            if outside:
                raise ValueError(f"attack.nodes: {outside[0]} is not a node of 0..{n - 1} "
                                 f"(data.nodes={n})")
        if att.nodes is None and att.fraction == 0:
            raise ValueError(f"attack.name={name} needs attackers: set attack.fraction > 0 or "
                             "attack.nodes")
        uses = {"std": ("gaussian", "input_noise"), "scale": ("sign_flip", "scale"),
                "z": ("alie",), "label_fraction": ("noisy_labels",)}
        for key in changed(att):
            if key in uses and name not in uses[key]:
                raise ValueError(f"attack.{key} applies to attack.name in "
                                 f"{'/'.join(uses[key])}, not {name}")
