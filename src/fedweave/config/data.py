"""The ``data`` section: the dataset, its split over the nodes, noise and pruning."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from fedweave.config.base import RootView, Section, changed


class SyntheticConfig(Section):
    """FedProx's Synthetic(α, β) generator (Li et al. 2020, §5.1)."""

    alpha: float = Field(
        1.0, ge=0, description="α of the benchmark's name Synthetic(α, β). It does not change "
        "the data: in FedProx's generator (paper and code) the per-node mean u_k ~ N(0, α²) "
        "shifts every class's logit by the same amount, so the argmax labels do not depend on "
        "it; kept so configs name the benchmark they reproduce",
        json_schema_extra={"informational": True})
    beta: float = Field(1.0, ge=0, description="β: spread of the per-node feature means "
                        "B_k ~ N(0, β²), v_k ~ N(B_k, 1)")
    dim: int = Field(60, ge=1, description="feature dimension")
    classes: int = Field(10, ge=2, description="number of classes")
    iid: bool = Field(False, description="one model (W, b) and v = 0 for every device")
    samples_mean: float = Field(4.0, description="log-normal mean of samples per node (log)")
    samples_sigma: float = Field(2.0, ge=0, description="log-normal sigma of samples per node")
    min_samples: int = Field(50, ge=1, description="samples added to every device's draw")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="last share of each device's "
                                 "samples held out as test")


class PruneConfig(Section):
    """Data pruning by per-sample scores (stage 2 of ``fedweave prune``): each node keeps
    ⌈ratio · n_i⌉ training samples with the highest (or lowest) score, in shard order — by
    default the ratio within each of its classes (``fedweave.data.prune``)."""

    scores: Path | None = Field(None, description="a scores.csv (node,index,score; higher = "
                                "more helpful) covering every training sample; null = no pruning")
    ratio: float = Field(1.0, gt=0, le=1, description="fraction of each node's training shard "
                         "kept (rounded up)")
    keep: Literal["top", "lowest"] = Field("top", description="keep the highest scores (the "
                                           "most helpful) or the lowest (reference system 000)")
    balance: Literal["class", "none"] = Field(
        "class", description="class: keep the ratio within each class of every node (largest-"
        "remainder rounding); none: the node's best scores whatever their class (may remove a "
        "class; warned)")


class DataConfig(Section):
    """The dataset, how it is split over the nodes, and each node's validation share."""

    dataset: str = Field("digits", description="a registered dataset (`fedweave data list`), "
                         "or hf:<name> for a Hugging Face dataset")
    root: Path | None = Field(None, description="data folder in torchvision's on-disk layout; "
                              "null = $FEDWEAVE_DATA or ~/.cache/fedweave")
    download: bool = Field(False, description="download a missing dataset (checksum-verified) "
                           "instead of stopping with the command that would")
    nodes: int = Field(10, ge=1, description="clients (federated) or peers (decentralized)",
                       json_schema_extra={"unit": "nodes"})
    partition: Literal["iid", "dirichlet", "shards", "classes", "quantity", "natural",
                       "heterogeneous"] = Field(
        "dirichlet", description="how training samples are split over the nodes: iid, "
        "dirichlet (label skew, alpha), shards (shards_per_node sorted-label shards), classes "
        "(classes_per_node, reference system 001's shifted window), quantity (log-normal sizes, "
        "sigma), natural (the dataset's own writers/devices), heterogeneous (unif, reference "
        "system 003)")
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (partition: dirichlet)")
    min_samples: int = Field(2, ge=1, description="minimum training samples per node",
                             json_schema_extra={"unit": "samples"})
    shards_per_node: int = Field(2, ge=1, description="partition: shards — label-sorted "
                                 "shards per node (McMahan et al. 2017)")
    classes_per_node: int | None = Field(None, ge=1, description="partition: classes — "
                                         "classes each node holds (required there)")
    class_share_low: float = Field(0.8, gt=0, le=1, description="partition: classes — a "
                                   "node's share of each of its classes ~ U(low, 1) "
                                   "(reference system 001)")
    class_order: Literal["natural", "shuffled"] | list[int] = Field(
        "natural", description="partition: classes: the class sequence the windows slide "
        "over: label order, a seeded shuffle, or an explicit list of every class (reference "
        "system 001: [7, 8, 2, 6, 4, 5, 1, 3, 0, 9])")
    class_shift: int = Field(1, ge=0, description="partition: classes: node i's window starts "
                             "at position class_shift·i of class_order (reference system 001: "
                             "4)")
    sigma: float = Field(1.0, ge=0, description="partition: quantity — log-normal sigma of "
                         "the node sizes")
    user_fraction: float = Field(
        1.0, gt=0, le=1, description="datasets with users (LEAF's femnist, shakespeare, celeba; "
        "synthetic): keep users in a seeded random order until they hold this fraction of the "
        "training samples (LEAF's --sf, niid sampling), before partitioning")
    user_min_samples: int = Field(
        0, ge=0, description="datasets with users: drop users with fewer training samples "
        "(LEAF's -k), after user_fraction", json_schema_extra={"unit": "samples"})
    natural_blocks: bool = Field(
        False, description="partition natural: every group (FEMNIST writer) is used, in "
        "data.nodes contiguous blocks of ⌊groups/nodes⌋ groups, the last taking the rest "
        "(PR-FL's writer-grouped clients), instead of one random group per node")
    unif: float = Field(0.5, ge=0, le=1, description="partition: heterogeneous "
                        "(reference system 003): "
                        "the fraction of the training set split uniformly at random, the rest "
                        "sorted by label and split contiguously (1 = iid, 0 = disjoint labels)")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of each node's samples "
                                "held out as its validation split (model selection: best)")
    client_test_fraction: float = Field(
        0.0, ge=0, lt=1, description="share of each node's partition held out as its own test "
        "split (drawn like the validation split, from (seed, \"client-test\", node), before it): "
        "the personalised test accuracy of every client's own model (summary.json "
        "final.personal_test_acc with _min/_max/_std); 0 = no personal test split")
    val_from_train: bool = Field(
        False, description="validation = the node's whole training shard (reference system "
        "001)"
    )
    train_samples: int | None = Field(None, ge=1, description="use a random subset of the "
                                      "training set", json_schema_extra={"unit": "samples"})
    test_samples: int | None = Field(None, ge=1, description="use a random subset of the test "
                                     "set", json_schema_extra={"unit": "samples"})
    normalize: bool = Field(True, description="standardize inputs with the dataset's "
                            "per-channel mean and std")
    augment: bool = Field(False, description="random crop (padding 4) + horizontal flip of "
                          "image batches, randomness from (seed, round, node, step)")
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig,
                                       description="data.dataset: synthetic — the generator")
    label_noise: float = Field(
        0.0, ge=0, lt=1, description="fraction of each noisy node's training labels flipped to "
        "another class, uniformly (seeded; the flipped global training indices go to "
        "label_noise.json in the run directory)")
    noisy_nodes: list[int] | None = Field(
        None, description="nodes that get label_noise / input_noise; null = every node")
    input_noise: float = Field(
        0.0, ge=0, description="σ of Gaussian noise added to the normalised inputs of the noisy "
        "nodes' training samples (fixed per sample, seeded; DICE's anomaly uses 100); the "
        "indices go to input_noise.json")
    prune: PruneConfig = Field(default_factory=lambda: PruneConfig(),
                               description="keep part of each node's training shard by score")

    def check(self, config: RootView) -> None:
        """Rules between data keys (the partition's required key, pruning, noisy nodes)."""
        d = self
        if d.partition == "classes" and d.classes_per_node is None:
            raise ValueError("data.classes_per_node is required when data.partition is 'classes'")
        if d.prune.scores is None and changed(d.prune):
            raise ValueError(f"data.prune.{changed(d.prune)[0]} needs data.prune.scores (a "
                             "scores.csv from fedweave influence)")
        if d.noisy_nodes is not None and not (d.label_noise or d.input_noise):
            raise ValueError("data.noisy_nodes needs data.label_noise or data.input_noise")
        if d.noisy_nodes is not None and any(not 0 <= i < d.nodes for i in d.noisy_nodes):
            raise ValueError(f"data.noisy_nodes: node ids must lie in 0..{d.nodes - 1}")
