"""The ``influence`` section: how ``fedweave influence`` / ``fedweave prune`` score
training samples."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fedweave.config.base import Section


class DICEConfig(Section):
    """DICE (Zhu et al., ICLR 2025): influence of each batch through r hops of gossip."""

    hops: int = Field(1, ge=1, le=8, description="r: hops of the influence cascade (r ≥ 2 "
                      "adds (I − ηH) Hessian-vector factors on intermediate nodes)")
    ground_truth: bool = Field(False, description="also measure DICE-GT per batch (node j's "
                               "loss change before gossip plus each neighbour's against a "
                               "counterfactual gossip that used θ_j^t): N + 2E extra "
                               "validation evaluations per step")


class EL2NConfig(Section):
    """EL2N (Paul et al. 2021): error norm early in training, over independent short runs."""

    runs: int = Field(4, ge=1, description="independent short runs (init and batch order "
                      "from (seed, 'el2n', run); the partition is the run's)")
    epochs: int | None = Field(None, ge=1, description="rounds of each short run; null = "
                               "⌈rounds / 10⌉")


class InfluenceConfig(Section):
    """How ``fedweave influence`` / ``fedweave prune`` score training samples (higher = more
    helpful: removing the sample would raise the validation loss)."""

    validation: Literal["global", "node"] = Field(
        "global", description="the validation loss scores are measured on: the union of all "
        "nodes' validation splits, or the scored sample's node's own split")
    layers: list[str] | None = Field(
        None, description="if_ekfac / if_exact: nn.Linear modules (names in "
        "model.named_modules()) whose parameters define the Hessian; null = the last one")
    damping: float | None = Field(
        None, ge=0, description="if_ekfac / if_exact: λ added to the Hessian's eigenvalues "
        "(besides the run's own l2_lambda + weight_decay); null = 0.1 × their mean when the "
        "objective has no L2 term, else 0")
    fisher: Literal["expected", "sampled", "empirical"] = Field(
        "expected", description="if_ekfac's curvature: the Fisher (= Gauss–Newton for cross-"
        "entropy) in expectation over the model's labels (one backward pass per class), with "
        "one label drawn from the model per sample, or at the true labels (empirical Fisher)")
    dice: DICEConfig = Field(default_factory=DICEConfig, description="scorer dice: hops and "
                             "the DICE-GT ground truth")
    el2n: EL2NConfig = Field(default_factory=EL2NConfig, description="scorer el2n: the short "
                             "runs it averages")
