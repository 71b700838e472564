"""The experiment configuration: one pydantic model tree (a contract).

Loaded from YAML or TOML, every field overridable with ``--set dotted.key=value``. Unknown keys
and wrong types are errors naming the key. Pluggable sections (``algorithm``, ``aggregator``)
are chosen by their ``name`` from registries of config classes that the algorithm and
aggregator modules fill when they are imported (``register_algorithm_config``,
``register_aggregator_config``), so keys of other algorithms are rejected and users add
algorithms without touching this file. This module imports no algorithm: the program's entry
points (CLI, ``fedweave.run``, ``fedweave.load_config``) load the built-in and plugin
registrations first (``fedweave.plugins``).
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from fedweave.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated,
    infinite and NaN numbers are refused (``1e400`` parses as inf)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
    """Data pruning by per-sample scores (stage 2 of ``fedweave prune``): each node keeps the
    ⌈ratio · n_i⌉ training samples with the highest (or lowest) score, in shard order."""

    scores: Path | None = Field(None, description="a scores.csv (node,index,score; higher = "
                                "more helpful) covering every training sample; null = no pruning")
    ratio: float = Field(1.0, gt=0, le=1, description="fraction of each node's training shard "
                         "kept (rounded up)")
    keep: Literal["top", "lowest"] = Field("top", description="keep the highest scores (the "
                                           "most helpful) or the lowest (reference system 000)")


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


class ModelConfig(Section):
    """The model every node trains (``fedweave.models``)."""

    name: str = Field("cnn", description="a registered model: logistic, mlp, cnn, lenet, "
                      "conv2, vgg11, resnet18, resnet32, resnet50, squeezenet, or a plugin's")
    norm: Literal["batch", "group", "none"] = Field(
        "group", description="normalization layers (batch norm forces the loop engine)")
    width: float = Field(1.0, gt=0, description="channel-width multiplier")
    group_channels: int = Field(32, ge=1, description="channels per GroupNorm group")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability inside the "
                           "network")
    last_dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability before the "
                                "classifier")
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [200, 200],
        description="mlp hidden layer widths (units, each at least 1)")
    stem: Literal["cifar", "imagenet"] = Field(
        "cifar", description="ResNet input stem: 3×3 conv (cifar) or 7×7 conv + max-pool "
        "(imagenet)")


class TrainConfig(Section):
    """Local training of every node (clients or peers)."""

    optimizer: Literal["sgd", "adam"] = Field("sgd", description="local optimizer")
    lr: float = Field(0.05, gt=0, description="local learning rate")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (buffers start at "
                            "zero)")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")
    weight_decay: float = Field(0.0, ge=0, description="wd·w added to the gradient (not to "
                                "the reported loss)")
    l2_lambda: float = Field(0.0, ge=0, description="adds ½λ‖w‖² to the loss (reference system "
                             "001)")
    batch_size: int = Field(32, ge=1, description="local mini-batch size",
                            json_schema_extra={"unit": "samples"})
    local_epochs: float = Field(1.0, gt=0, description="passes over the node's shard per round",
                                json_schema_extra={"unit": "epochs"})
    local_steps: int | None = Field(None, ge=1, description="overrides local_epochs",
                                    json_schema_extra={"unit": "steps"})
    epoch_samples: int | None = Field(
        None, ge=1, description="samples in one epoch of a node, whatever its shard size "
        "(reference system 001's train_data_length: 10,000); each shard sample is drawn "
        "⌊m/n⌋ or ⌈m/n⌉ times, in random order; default: the shard size")
    scheduler: Literal["none", "step", "multistep"] = Field(
        "none", description="learning-rate schedule over rounds: none, step (StepLR) or "
        "multistep (MultiStepLR at milestones)")
    step_size: int = Field(1, ge=1, description="StepLR period",
                           json_schema_extra={"unit": "rounds"})
    gamma: float = Field(0.9, gt=0, description="StepLR factor: lr·gamma^⌊round/step_size⌋")
    milestones: list[int] = Field(default_factory=list, description="scheduler: multistep "
                                  "(MultiStepLR): rounds after which lr is multiplied by gamma")


class AlgorithmConfig(Section):
    """Base of every algorithm's config; subclasses fix ``name`` with a Literal."""

    name: str
    kind: ClassVar[Literal["federated", "decentralized", "async", "centralized"]] = "federated"
    #: True when ``clock.asynchronous`` changes how the algorithm runs
    supports_async: ClassVar[bool] = False
    #: True when the server combines client rows with the ``aggregator`` section's rule
    uses_aggregator: ClassVar[bool] = False
    #: True when that aggregate is the only thing released about a client (client-level DP)
    client_privacy: ClassVar[bool] = False

    def check(self, config: Config) -> None:
        """Rules between this algorithm's keys and the rest of ``config`` (e.g. a cohort
        against ``data.nodes``); raise ``ValueError`` naming the key and the fix."""


class Pluggable:
    """A registry of config classes for a section chosen by its ``name`` key."""

    def __init__(self, section: str, default: str | None) -> None:
        self.section, self.default = section, default
        self.classes: dict[str, type[Section]] = {}

    def register(self, name: str):  # type: ignore[no-untyped-def]
        """Class decorator: ``<section>.name: <name>`` selects this config class."""

        def add(cls: type[Section]) -> type[Section]:
            self.classes[name] = cls
            return cls

        return add

    def resolve(self, value: Any) -> Section:
        if isinstance(value, Section):
            return value
        if not isinstance(value, dict):
            raise ValueError("must be a mapping with a 'name' key")
        value = {"name": self.default, **value}
        name = value["name"]
        if name is None and None in self.classes:
            return self.classes[None].model_validate(value)  # type: ignore[index]
        if name not in self.classes:
            if not self.classes:
                raise ValueError(
                    f"no {self.section} is registered: load the built-ins first "
                    "(fedweave.plugins.load_builtins(); the CLI and fedweave.run do)")
            choices = ", ".join(sorted(str(k) for k in self.classes if k is not None))
            raise ValueError(f"unknown {self.section} {name!r}; choose one of: {choices}")
        return self.classes[name].model_validate(value)


ALGORITHM_CONFIGS = Pluggable("algorithm", "fedavg")


def register_algorithm_config(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: make ``algorithm.name: <name>`` select this config class."""
    return ALGORITHM_CONFIGS.register(name)


class AggregatorConfig(Section):
    """How the server combines the rows trained in a round (``fedweave.algorithms.federated.
    aggregate``). ``name: null`` keeps the algorithm's own rule (FedAvg, FedProx, clustered:
    ``weighted_mean`` by training samples; SCAFFOLD: ``mean``)."""

    name: str | None = Field(None, description="aggregation rule; null = the algorithm's own")


AGGREGATOR_CONFIGS = Pluggable("aggregator", None)
AGGREGATOR_CONFIGS.classes[None] = AggregatorConfig  # type: ignore[index]


def register_aggregator_config(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: make ``aggregator.name: <name>`` select this config class."""
    return AGGREGATOR_CONFIGS.register(name)


class TopologyConfig(Section):
    """The communication graph of decentralized algorithms."""

    name: str = Field("ring", description="a registered topology (fedweave.topology)")
    mixing: Literal["metropolis", "uniform", "max_degree"] = Field(
        "metropolis", description="mixing matrix W: metropolis (doubly stochastic), uniform "
        "(1/(deg+1), reference system 001), max_degree")
    degree: int = Field(3, ge=1, description="random_regular: degree of every node")
    p: float = Field(0.3, gt=0, le=1, description="erdos_renyi: edge probability")
    edges: list[tuple[int, int]] | None = Field(None, description="edges: the edge list "
                                                "[[i, j], ...]")
    file: Path | None = Field(None, description="edge list file, or reference system "
                              "001's node_list.json")
    hosts: Path | None = Field(None, description="reference system 001's hosts.json (for "
                               "torchrun)")


class ClockConfig(Section):
    """The virtual clock: per-node compute speed, bandwidth, latency and faults. Simulated
    time is computed from these, never measured."""

    asynchronous: bool = Field(False, description="nodes run on their own clocks (no round "
                               "barrier); asynchronous and decentralized algorithms")
    seconds_per_sample: float = Field(1e-3, gt=0, description="virtual compute time of one "
                                      "training sample on a speed-1 node",
                                      json_schema_extra={"unit": "s"})
    speed_sigma: float = Field(0.0, ge=0, description="log-normal spread of node speeds")
    speeds: list[float] | None = Field(None, description="explicit per-node speed factors")
    trace: Path | None = Field(None, description="CSV with header node,seconds_per_sample"
                               "[,bandwidth_up,bandwidth_down] (overrides the draws)")
    bandwidth_up: float = Field(1e9, gt=0, description="upload bandwidth per node",
                                json_schema_extra={"unit": "bytes/s"})
    bandwidth_down: float = Field(1e9, gt=0, description="download bandwidth per node",
                                  json_schema_extra={"unit": "bytes/s"})
    latency_s: float = Field(0.0, ge=0, description="latency added to every transfer",
                             json_schema_extra={"unit": "s"})
    client_dropout: float = Field(0.0, ge=0, lt=1, description="probability a cohort member "
                                  "drops out of a round (federated)")
    link_drop: float = Field(0.0, ge=0, lt=1, description="probability an exchange is lost")
    swap_timeout: float | None = Field(None, gt=0, description="an exchange arriving later than "
                                       "this is dropped", json_schema_extra={"unit": "s"})

    deadline_s: float | None = Field(
        None, gt=0, description="federated rounds: virtual seconds the server waits; members "
        "whose job (download + training + upload) takes longer are stragglers and dropped "
        "(counted as stragglers_dropped); null = wait for everyone")
    message_corruption: float = Field(
        0.0, ge=0, le=1, description="probability that a model a node sends (a client's upload "
        "or a peer message) arrives with NaN values, drawn per (seed, round or step, sender, "
        "receiver); receivers reject non-finite models and count them (updates_rejected, "
        "messages_rejected)")
    corrupt_nodes: list[int] | None = Field(
        None, description="senders whose messages message_corruption can hit; null = every node")
    node_crash: float = Field(
        0.0, ge=0, lt=1, description="decentralized: probability that a running node crashes "
        "at the start of a round (epoch), drawn per (seed, round, node); it neither steps nor "
        "exchanges while down and its neighbours re-normalise their mixing weights")
    crash_rounds: int = Field(1, ge=1, description="rounds a crashed node stays down before it "
                              "rejoins with the model it had when it crashed")
    train_fraction: float = Field(
        1.0, gt=0, le=1, description="asynchronous decentralized runs: share of each node's "
        "epoch period spent training; the rest it is idle (reference system 001's nodes spend "
        "most of it evaluating): period T_i = S·τ_i / train_fraction")
    phase: Literal["zero", "random"] = Field(
        "zero", description="asynchronous decentralized runs: node i starts its first epoch "
        "at 0 or at a seeded phase ~ U(0, T_i) (desynchronised train/idle periods)")

    # federated clients (synchronous and asynchronous): fedweave.sim.clock.FederatedClock
    profile: Literal["custom", "prfl"] = Field(
        "custom", description="federated client profile: custom (the keys above) or prfl "
        "(PR-FL's 10 clients: their mean bandwidths in MB/s, client i takes entry i mod 10, "
        "re-drawn per job as the mean of 20 log-normal draws with sigma 0.3; server up 10 and "
        "down 50 MB/s with sigma 0.1; initial densities for algorithm prfl)")
    seconds_per_step: float | None = Field(
        None, gt=0, description="seconds per local step (at speed factor 1) instead of "
        "seconds_per_sample; speeds/speed_sigma/trace (column seconds_per_step) scale it")
    bandwidth_sigma: float = Field(
        0.0, ge=0, description="federated clients: each job's up/down bandwidth is the "
        "node's bandwidth times the mean of 20 draws exp(N(0, sigma^2)) from the seeded "
        "stream (0 = static)")
    server_up: float | None = Field(
        None, gt=0, description="bytes/s of the server's upload link, shared FIFO by "
        "concurrent downloads (null = unlimited)")
    server_down: float | None = Field(
        None, gt=0, description="bytes/s of the server's download link, shared FIFO by "
        "concurrent uploads (null = unlimited)")


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


DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class EngineConfig(Section):
    """How the run is computed (never what it computes)."""

    name: Literal["local", "distributed"] = Field(
        "local", description="local: one process; distributed: torch.distributed ranks "
        "(torchrun or --procs)")
    backend: Literal["auto", "loop", "vectorized", "fused"] = Field(
        "auto", description="how local gradients are computed: loop (one model at a time), "
        "vectorized (torch.func vmap over the node stack), fused (batched matmuls for "
        "Linear/ReLU stacks, whole local rounds on per-layer stacks); auto: fused when the "
        "model is a Linear/ReLU stack, else the faster of loop and vectorized (measured once "
        "per machine, model and shapes, then reused: fedweave.training.select)")
    device: str = Field(
        "auto", description="auto (cuda when this torch sees a GPU, else cpu), cpu, cuda, "
        "cuda:N or mps; a device this torch cannot use is refused before the data is "
        "loaded")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; null = "
                                "torch's default")
    chunk: int | None = Field(
        None, ge=1, description="rows per batched kernel call of the vectorized and fused "
        "engines; processes hold whole chunks, so results are bit-identical for any process "
        "count. null = min(8 on a CPU / 64 on a GPU, the rows trained together)",
        json_schema_extra={"unit": "rows"})
    timeout_s: float = Field(300.0, gt=0, description="distributed: peer timeout",
                             json_schema_extra={"unit": "s"})
    exchange: Literal["auto", "all_gather", "point_to_point"] = Field(
        "auto", description="distributed decentralized runs: all-gather every node's "
        "gradients, or split the nodes and send neighbour messages point to point")

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
        return value


class OutputConfig(Section):
    """The run directory: checkpoints, evaluation, plots, trackers."""

    dir: Path = Field(Path("runs"), description="parent folder of run directories (--out)")
    checkpoint_every: int = Field(1, ge=0, description="rounds between checkpoints; 0 = never",
                                  json_schema_extra={"unit": "rounds"})
    keep: Literal["latest", "every_k", "best", "all"] = Field(
        "latest", description="checkpoints kept: the newest (and its predecessor as a "
        "fallback), also every keep_every-th round, also the best by validation accuracy, or "
        "all")
    keep_every: int = Field(10, ge=1, description="keep: every_k keeps rounds divisible by "
                            "this", json_schema_extra={"unit": "rounds"})
    eval_every: int = Field(1, ge=1, description="rounds between evaluations (the last round "
                            "is always evaluated)", json_schema_extra={"unit": "rounds"})
    client_eval: Literal["cohort", "all", "never"] = Field(
        "cohort", description="federated runs: whose validation split is evaluated at each "
        "evaluation (rows of clients.csv, the clients_val_* spread, and the global model's "
        "pooled val_*): cohort = the clients trained that round (cost grows with the cohort); "
        "all = every client every evaluation (cost grows with the population: 100,000 "
        "clients are 100,000 evaluations); never = no per-client rows (val_* pools every "
        "client's split)")
    plots: bool = Field(True, description="draw plots/*.png at the end of the run")
    progress: bool = Field(True, description="progress bar / log lines on the terminal "
                           "(informational)", json_schema_extra={"informational": True})
    tensorboard: bool = Field(False, description="write TensorBoard event files to "
                              "<run>/tensorboard (optional extra: pip install fedweave[trackers])")
    mlflow: str | None = Field(None, description="MLflow tracking URI (file:/path, http://host) "
                               "to log params and metrics to (optional extra: fedweave[trackers])")
    target_acc: float | None = Field(
        None, gt=0, le=1, description="test accuracy (0..1) whose first evaluation reaching it "
        "gives summary.json time_to_target: {sim_s, update} (null in the summary if never)")


class NotifyConfig(Section):
    """Messages about a run (reference system 004's push) through Apprise URLs: Telegram
    ``tgram://``, Slack, e-mail, ntfy, Discord, a JSON webhook ``json://``... The URLs hold
    tokens, so they are never part of the config: they come from ``$FEDWEAVE_NOTIFY``
    (comma-separated) and from ``urls_file``. No URL, no messages."""

    events: list[Literal["start", "every_k", "finish", "failure"]] = Field(
        default_factory=lambda: ["finish", "failure"],  # type: ignore[arg-type]
        description="when to send a message "
        "(every_k: every notify.every rounds)")
    every: int = Field(10, ge=1, description="rounds between every_k messages",
                       json_schema_extra={"unit": "rounds"})
    urls_file: Path | None = Field(None, description="a file outside the run directory with "
                                   "Apprise URLs, one per line (its path, not its content, is "
                                   "recorded)")


#: DeepInversion presets of reference system 003 (Fed_distill's config/deep_inv/*.yaml): Adam
#: lr, Adam steps per batch, α_tv, α_l2, α_bn, α_comp
SYNTHESIS_PRESETS: dict[str, dict[str, float]] = {
    "custom": {"lr": 0.1, "iterations": 1000, "tv": 1e-3, "l2": 0.0, "bn": 10.0,
               "competition": 10.0},
    "custom_more_iterations": {"lr": 0.1, "iterations": 3000, "tv": 1e-3, "l2": 0.0,
                               "bn": 10.0, "competition": 10.0},
    "paper": {"lr": 0.05, "iterations": 2000, "tv": 2.5e-5, "l2": 3e-8, "bn": 10.0,
              "competition": 10.0},
}


class SynthesisConfig(Section):
    """DeepInversion and Adaptive DeepInversion (Yin et al. 2020, "Dreaming to Distill"): the
    images a batch of the synthetic set is made of (``fedweave.algorithms.oneshot``). A key
    left null takes the ``preset``'s value."""

    preset: Literal["custom", "custom_more_iterations", "paper"] = Field(
        "custom", description="custom: lr 0.1, 1000 iterations, α_tv 1e-3, α_l2 0, α_bn 10, "
        "α_comp 10; custom_more_iterations: the same with 3000 iterations; paper: lr 0.05, 2000 "
        "iterations, α_tv 2.5e-5, α_l2 3e-8, α_bn 10, α_comp 10")
    iterations: int | None = Field(None, ge=1, description="Adam steps per batch (null: preset)")
    lr: float | None = Field(None, gt=0, description="Adam learning rate on the images, in "
                             "normalised input units per step (null: preset)")
    tv: float | None = Field(None, ge=0, description="α_tv, weight of the total variation "
                             "(sum of the L2 norms of 4 difference maps) (null: preset)")
    l2: float | None = Field(None, ge=0, description="α_l2, weight of the batch's Frobenius "
                             "norm ‖x̃‖ (null: preset)")
    bn: float | None = Field(None, ge=0, description="α_bn, weight of Σ_BN ‖σ²_b − running_var‖₂ "
                             "+ ‖μ_b − running_mean‖₂ (null: preset)")
    competition: float | None = Field(None, ge=0, description="α_comp, weight of Adaptive "
                                      "DeepInversion's 1 − JS(teacher ‖ student) (null: preset)")
    temperature: float = Field(3.0, gt=0, description="softmax temperature of the competition "
                               "term (unitless)")
    divergence: Literal["js", "reversed_kl"] = Field(
        "js", description="competition divergence: js = ½KL(p‖m) + ½KL(q‖m), the Jensen–Shannon "
        "divergence; reversed_kl = ½KL(m‖p) + ½KL(m‖q), what the seed and NVlabs code compute")
    batch_size: int = Field(256, ge=1, description="images per synthesised batch (the BN "
                            "statistics are over one batch)")
    jitter: int = Field(2, ge=0, description="random roll of the images by up to ± this many "
                        "pixels per iteration and axis")
    flip: bool = Field(False, description="also mirror the images horizontally at random per "
                       "iteration")
    initial_batches: int = Field(50, ge=0, description="batches made with non-adaptive "
                                 "DeepInversion before the student trains (stage synthesize)")
    sampling: int = Field(0, ge=0, description="sampling DeepInversion (reference "
                          "system 003's Algorithm 1): "
                          "each iteration averages the loss of this many teachers drawn without "
                          "replacement, CE weighted by each teacher's class frequencies; 0 = "
                          "teachers cycled, one batch each, loss masked to the teacher's classes")

    def resolved(self) -> dict[str, float]:
        """lr, iterations, tv, l2, bn, competition: the keys set here over the preset's."""
        out = dict(SYNTHESIS_PRESETS[self.preset])
        for key in out:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return out


class StudentConfig(Section):
    """The student trained on the synthetic set (reference system 003's train_student.py)."""

    model: ModelConfig | None = Field(None, description="the student's architecture (null: "
                                      "the teachers' model section)")
    epochs: int = Field(300, ge=1, description="student epochs (an epoch is steps_per_epoch "
                        "steps)")
    steps_per_epoch: int = Field(195, ge=1, description="SGD steps per student epoch (the seed: "
                                 "⌊50000 / 256⌋)")
    batch_size: int = Field(256, ge=1, description="images per student step")
    lr: float = Field(0.1, gt=0, description="SGD learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, description="SGD weight decay (L2 coefficient)")
    milestones: list[int] = Field(default_factory=lambda: [150, 250], description="epochs after "
                                  "which lr is multiplied by gamma (MultiStepLR)")
    gamma: float = Field(0.1, gt=0, description="MultiStepLR factor")
    loss: Literal["ce", "kl"] = Field("ce", description="ce: cross-entropy on the synthesised "
                                      "labels; kl: KL(teacher ensemble ‖ student) at temperature")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of loss: kl")
    class_weights: list[float] | None = Field(None, description="per-class weights of the "
                                              "cross-entropy (one per class; null: equal)")
    augment: bool = Field(True, description="random crop (after crop_padding zero padding) + "
                          "horizontal flip on every pooled image")
    crop_padding: int = Field(4, ge=0, description="augment: zero padding of the random crop, "
                              "in pixels per side (the seed's CIFAR-10 transform: 4)")
    adaptive: bool = Field(True, description="make new batches with Adaptive DeepInversion "
                           "(competition against the current student); false: plain DI")
    new_batches_per_epoch: int = Field(2, ge=0, description="batches synthesised per epoch, each "
                                       "trained on at once and added to the pool")


Baseline = Literal["real", "noise"]


def _every_baseline() -> list[Baseline]:
    return ["real", "noise"]


class DistillConfig(Section):
    """One-shot federated learning by data-free distillation (reference system 003,
    ``fedweave distill``): one teacher per client (``algorithm.name: local``, ``rounds`` epochs)
    → synthetic images from the teachers → a student trained on them."""

    synthesis: SynthesisConfig = Field(default_factory=SynthesisConfig, description="how the "
                                       "synthetic images are made (DeepInversion)")
    student: StudentConfig = Field(default_factory=StudentConfig, description="the student "
                                   "trained on the synthetic set")
    student_shards: int = Field(0, ge=0, description="the last k of the data.nodes shards stay "
                                "at the student as real training data and train no teacher "
                                "(the seed's 'half the data at the student': nodes 2, k 1)")
    baselines: list[Baseline] = Field(
        default_factory=_every_baseline, description="students trained the same way on the "
        "clients' real data (upper bound) and on random-noise images labelled by the teachers' "
        "ensemble (lower bound)")


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


def _default_algorithm() -> AlgorithmConfig:
    cfg = ALGORITHM_CONFIGS.resolve({"name": "fedavg"})
    assert isinstance(cfg, AlgorithmConfig)
    return cfg


def _changed(section: BaseModel) -> list[str]:
    """Keys of ``section`` whose value differs from the field default (so a dumped config,
    which spells out every default, is not mistaken for one that sets them)."""
    out = []
    for name, field in type(section).model_fields.items():
        default = field.get_default(call_default_factory=True)
        if getattr(section, name) != default:
            out.append(name)
    return out


class Config(Section):
    name: str = Field("fedavg-digits", description="run name: the run directory is "
                      "<output.dir>/<name>-<timestamp>; unset = <algorithm.name>-"
                      "<data.dataset>")
    seed: int = Field(0, description="root of every random stream (seed, purpose, round, node)")
    rounds: int = Field(30, ge=1, description="federated rounds, decentralized epochs, or "
                        "server updates of asynchronous algorithms")
    plugins: list[str] = Field(default_factory=list, description="modules imported before the "
                               "config is resolved (they register models, datasets, "
                               "algorithms, aggregators); also --import")
    data: DataConfig = Field(default_factory=DataConfig, description="dataset and partition")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the model")
    train: TrainConfig = Field(default_factory=TrainConfig, description="local training")
    algorithm: SerializeAsAny[AlgorithmConfig] = Field(
        default_factory=lambda: _default_algorithm(),
        description="the algorithm, chosen by algorithm.name (its keys follow)")
    aggregator: SerializeAsAny[AggregatorConfig] = Field(
        default_factory=AggregatorConfig, description="the server's aggregation rule, chosen "
        "by aggregator.name")
    topology: TopologyConfig = Field(default_factory=TopologyConfig,
                                     description="decentralized algorithms' graph")
    clock: ClockConfig = Field(default_factory=ClockConfig, description="the virtual clock")
    attack: AttackConfig = Field(default_factory=AttackConfig, description="Byzantine nodes")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig,
                                   description="differential privacy and its accountant")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="how it is computed")
    output: OutputConfig = Field(default_factory=OutputConfig, description="the run directory")
    notify: NotifyConfig = Field(default_factory=NotifyConfig,
                                 description="notifications (Apprise)")
    distill: DistillConfig = Field(default_factory=DistillConfig, description="fedweave "
                                   "distill's synthesis, student and baselines")
    influence: InfluenceConfig = Field(default_factory=InfluenceConfig,
                                       description="data influence scoring (fedweave influence)")

    @model_validator(mode="before")
    @classmethod
    def _derive_name(cls, value: Any) -> Any:
        """An unset name becomes ``<algorithm.name>-<data.dataset>``."""
        if isinstance(value, dict) and value.get("name") is None:
            algorithm, data = value.get("algorithm"), value.get("data")
            alg = (algorithm.get("name") if isinstance(algorithm, dict)
                   else getattr(algorithm, "name", None)) or ALGORITHM_CONFIGS.default
            dataset = (data.get("dataset") if isinstance(data, dict)
                       else getattr(data, "dataset", None)) or "digits"
            value = {**value, "name": f"{alg}-{dataset}"}
        return value

    @field_validator("algorithm", mode="before")
    @classmethod
    def _select_algorithm(cls, value: Any) -> Any:
        return ALGORITHM_CONFIGS.resolve(value)

    @field_validator("aggregator", mode="before")
    @classmethod
    def _select_aggregator(cls, value: Any) -> Any:
        return AGGREGATOR_CONFIGS.resolve(value)

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.data.partition == "classes" and self.data.classes_per_node is None:
            raise ValueError("data.classes_per_node is required when data.partition is 'classes'")
        d = self.data
        if d.prune.scores is None and _changed(d.prune):
            raise ValueError(f"data.prune.{_changed(d.prune)[0]} needs data.prune.scores (a "
                             "scores.csv from fedweave influence)")
        if d.noisy_nodes is not None and not (d.label_noise or d.input_noise):
            raise ValueError("data.noisy_nodes needs data.label_noise or data.input_noise")
        if d.noisy_nodes is not None and any(not 0 <= i < d.nodes for i in d.noisy_nodes):
            raise ValueError(f"data.noisy_nodes: node ids must lie in 0..{d.nodes - 1}")
        alg = self.algorithm
        kind = alg.kind
        if kind != "decentralized":
            changed = _changed(self.topology)
            if changed:
                raise ValueError(
                    f"topology.{changed[0]} applies to decentralized algorithms only; "
                    f"algorithm.name={alg.name} is {kind}: remove the topology section")
        if self.clock.asynchronous and kind == "async":
            raise ValueError(
                f"clock.asynchronous: algorithm.name={alg.name} is asynchronous by definition "
                "(the switch is for decentralized peers); remove clock.asynchronous")
        if self.clock.asynchronous and not alg.supports_async:
            raise ValueError(
                f"clock.asynchronous: algorithm.name={alg.name} runs synchronous rounds; choose "
                "a decentralized algorithm, an asynchronous federated one (fedasync, fedbuff, "
                "fedfix, prfl: no switch needed), or set clock.asynchronous=false")
        clock_changed = _changed(self.clock)
        if kind not in ("federated", "async"):
            for key in ("profile", "seconds_per_step", "bandwidth_sigma", "server_up",
                        "server_down"):
                if key in clock_changed:
                    raise ValueError(f"clock.{key} shapes federated client jobs; "
                                     f"algorithm.name={alg.name} is {kind}")
        if self.clock.profile == "prfl":
            for key in ("bandwidth_up", "bandwidth_down", "bandwidth_sigma", "server_up",
                        "server_down", "trace"):
                if key in clock_changed:
                    raise ValueError(f"clock.{key}: clock.profile=prfl sets the bandwidths; "
                                     "remove one of the two")
        for key in ("link_drop", "swap_timeout"):
            if kind != "decentralized" and key in _changed(self.clock):
                raise ValueError(f"clock.{key} is a fault of peer exchanges; algorithm.name="
                                 f"{alg.name} is {kind}")
        for key in ("train_fraction", "phase"):
            if key in _changed(self.clock) and (kind != "decentralized"
                                                or not self.clock.asynchronous):
                raise ValueError(
                    f"clock.{key} shapes the train/idle periods of asynchronous peers; it "
                    f"needs a decentralized algorithm and clock.asynchronous=true "
                    f"(algorithm.name={alg.name}, asynchronous={self.clock.asynchronous})")
        if self.clock.client_dropout and kind != "federated":
            raise ValueError(
                f"clock.client_dropout applies to federated cohorts; algorithm.name={alg.name} "
                f"is {kind}")
        if _changed(self.distill) and alg.name != "local":
            raise ValueError(f"distill.{_changed(self.distill)[0]}: the distill section is for "
                             f"fedweave distill, whose teachers are algorithm.name=local (not "
                             f"{alg.name})")
        if self.distill.student_shards >= self.data.nodes:
            raise ValueError(f"distill.student_shards={self.distill.student_shards} leaves no "
                             f"teacher among data.nodes={self.data.nodes} shards")
        if self.aggregator.name is not None and not alg.uses_aggregator:
            raise ValueError(
                f"aggregator.name={self.aggregator.name}: algorithm.name={alg.name} does not "
                "aggregate client rows; remove the aggregator section")
        alg.check(self)
        if self.clock.deadline_s is not None and kind != "federated":
            raise ValueError(f"clock.deadline_s drops federated stragglers; algorithm.name="
                             f"{alg.name} is {kind} (peer exchanges have clock.swap_timeout)")
        for key in ("node_crash", "crash_rounds"):
            if kind != "decentralized" and key in _changed(self.clock):
                raise ValueError(f"clock.{key}: node crashes are simulated for decentralized "
                                 f"runs; algorithm.name={alg.name} is {kind}")
        if self.clock.message_corruption and kind == "centralized":
            raise ValueError("clock.message_corruption: the centralized reference sends no "
                             "messages")
        if "corrupt_nodes" in _changed(self.clock) and not self.clock.message_corruption:
            raise ValueError("clock.corrupt_nodes needs clock.message_corruption > 0")
        self._check_attack(kind)
        self._check_privacy()
        return self

    def _check_attack(self, kind: str) -> None:
        att, name = self.attack, self.attack.name
        if name is None:
            changed = _changed(att)
            if changed:
                raise ValueError(f"attack.{changed[0]} is set but attack.name is null: name "
                                 "the attack or remove the attack section")
            return
        if kind == "centralized":
            raise ValueError(f"attack.name={name}: the centralized reference has no nodes to "
                             "attack it")
        if att.nodes is not None and "fraction" in _changed(att):
            raise ValueError("set attack.nodes or attack.fraction, not both")
        if att.nodes is None and att.fraction == 0:
            raise ValueError(f"attack.name={name} needs attackers: set attack.fraction > 0 or "
                             "attack.nodes")
        uses = {"std": ("gaussian", "input_noise"), "scale": ("sign_flip", "scale"),
                "z": ("alie",), "label_fraction": ("noisy_labels",)}
        for key in _changed(att):
            if key in uses and name not in uses[key]:
                raise ValueError(f"attack.{key} applies to attack.name in "
                                 f"{'/'.join(uses[key])}, not {name}")

    def _check_privacy(self) -> None:
        p, alg = self.privacy, self.algorithm
        if p.level is None:
            changed = _changed(p)
            if changed:
                raise ValueError(f"privacy.{changed[0]} is set but privacy.level is null: set "
                                 "privacy.level=client or sample, or remove the section")
            return
        if alg.kind != "federated":
            raise ValueError(f"privacy.level={p.level} protects federated clients; "
                             f"algorithm.name={alg.name} is {alg.kind}")
        if p.level == "client" and not alg.client_privacy:
            raise ValueError(f"privacy.level=client: algorithm.name={alg.name} releases more "
                             "than one clipped, noised aggregate per round; use fedavg or "
                             "fedprox, or privacy.level=sample")
        if p.level == "client" and self.aggregator.name is not None:
            raise ValueError("privacy.level=client aggregates by the clipped, noised sum: "
                             "remove aggregator.name")
        if p.clip == float("inf") and p.noise_multiplier > 0:
            raise ValueError("privacy.clip=inf bounds nothing, so no noise can make it private: "
                             "set privacy.noise_multiplier=0 or a finite clip")
        if p.accountant == "pld" and p.sampling == "fixed":
            raise ValueError("privacy.accountant=pld accounts Poisson sampling only: set "
                             "privacy.sampling=poisson or privacy.accountant=rdp")


# ---------------------------------------------------------------------------- loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)  # type: ignore[no-untyped-call]
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_text(path: Path, what: str, expected: str) -> str:
    """The UTF-8 text of a file a config key names (``what``: "config", "topology.file",
    ...); a missing, unreadable, binary (NUL bytes) or non-UTF-8 file is a one-line
    ``UserError`` saying what was ``expected``."""
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} {path}: not a text file (byte {exc.start} is not UTF-8; "
                        f"expected {expected})") from None
    except OSError as exc:
        raise UserError(f"cannot read {what} {path}: {exc.strerror}") from None
    if "\x00" in text:
        raise UserError(f"{what} {path}: not a text file (it contains NUL bytes; expected "
                        f"{expected})")
    return text


def read_raw(path: Path) -> dict[str, Any]:
    """The mapping in a YAML (or ``.toml``) config file; unreadable files, syntax errors (with
    file:line) and duplicate keys are one-line ``UserError``s."""
    text = read_text(path, "config", "UTF-8 YAML or TOML")
    try:
        if path.suffix == ".toml":
            data = tomllib.loads(text)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = exc.problem or exc.context or "syntax error"
        raise UserError(f"cannot parse {where}: {problem}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot parse {path}: {exc}".splitlines()[0]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the top level must be a mapping of config sections")
    return data


def _parse_value(text: str) -> Any:
    """Parse an override value as YAML (so ``0.1``, ``true``, ``[1,2]``, ``null`` work)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _merge(into: dict[str, Any], value: dict[str, Any]) -> None:
    for k, v in value.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` strings to a nested dict (in place) and return it. A mapping
    value is merged into the section (``--set 'data={nodes: 4}'`` keeps the file's other
    data keys)."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected dotted.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise UserError(f"--set {item!r}: empty key")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: {part!r} is not a section")
            node = child
        value = _parse_value(raw)
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            _merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = value
    return data


def _section_class(loc: tuple[Any, ...], data: dict[str, Any] | None) -> type[BaseModel] | None:
    """The config class at ``loc`` (a pluggable section's class from the raw ``data``)."""
    cls: type[BaseModel] = Config
    node: Any = data or {}
    for part in loc:
        field = cls.model_fields.get(str(part))
        if field is None:
            return None
        node = node.get(part, {}) if isinstance(node, dict) else {}
        if part in ("algorithm", "aggregator") and cls is Config:
            registry = ALGORITHM_CONFIGS if part == "algorithm" else AGGREGATOR_CONFIGS
            name = node.get("name", registry.default) if isinstance(node, dict) \
                else registry.default
            found = registry.classes.get(name)  # type: ignore[arg-type]
            if found is None:
                return None
            cls = found
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            cls = field.annotation
        else:
            return None
    return cls


def did_you_mean(loc: tuple[Any, ...], data: dict[str, Any] | None = None) -> str:
    """A hint for the unknown key at ``loc``: the closest key of its section (``round`` →
    ``rounds``), or the algorithms that have it (``algorithm.k`` under fedavg)."""
    key = str(loc[-1])
    cls = _section_class(loc[:-1], data)
    if cls is None:
        return ""
    close = difflib.get_close_matches(key, list(cls.model_fields), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {'.'.join([*map(str, loc[:-1]), close[0]])}?)"
    if tuple(loc[:-1]) == ("algorithm",):
        owners = sorted(str(name) for name, c in ALGORITHM_CONFIGS.classes.items()
                        if key in c.model_fields)
        if owners:
            return f" (a key of algorithm.name: {', '.join(owners)})"
    return ""


def format_validation_error(exc: ValidationError, data: dict[str, Any] | None = None) -> str:
    """One line per problem: ``config error: data.alpha: Input should be greater than 0``;
    unknown keys say which key was probably meant (``data`` is the raw mapping validated)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key" + did_you_mean(tuple(err["loc"]), data)
        lines.append(f"{loc}: {msg}")
    return "config error: " + "; ".join(lines)


def validate_config(data: dict[str, Any]) -> Config:
    """Validate a nested dict into a ``Config``; problems raise ``UserError`` naming the key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc, data)) from None


def load_raw(path: str | Path | None = None, overrides: list[str] | None = None
             ) -> dict[str, Any]:
    """The unvalidated mapping of a config file (or ``{}``) with ``overrides`` applied."""
    data = read_raw(Path(path)) if path is not None else {}
    return apply_overrides(data, list(overrides or []))


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML/TOML file (or the defaults when ``path`` is None) and apply overrides.
    The algorithm/aggregator registries must be filled first: use ``fedweave.load_config``
    (``fedweave.plugins.load_config``), which also imports the config's ``plugins``."""
    return validate_config(load_raw(path, overrides))


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain, YAML-safe dict of the fully resolved config."""
    return config.model_dump(mode="json")


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
