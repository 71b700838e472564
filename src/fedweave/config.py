"""The experiment configuration: one pydantic model tree (DESIGN §4, a contract).

Loaded from YAML or TOML, every field overridable with ``--set dotted.key=value``. Unknown keys
and wrong types are errors naming the key. ``algorithm`` is chosen by ``algorithm.name`` from a
registry of config classes (``register_algorithm_config``), so keys of other algorithms are
rejected and users can add algorithms without touching this file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import tomllib
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


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(Section):
    """FedProx's Synthetic(α, β) generator (Li et al. 2020, §5.1)."""

    alpha: float = Field(1.0, ge=0, description="spread of per-node model means")
    beta: float = Field(1.0, ge=0, description="spread of per-node feature means")
    dim: int = Field(60, ge=1)
    classes: int = Field(10, ge=2)
    iid: bool = False
    samples_mean: float = Field(4.0, description="log-normal mean of samples per node (log)")
    samples_sigma: float = Field(2.0, ge=0)
    min_samples: int = Field(50, ge=1)
    test_fraction: float = Field(0.2, gt=0, lt=1)


class DataConfig(Section):
    dataset: str = "digits"
    root: Path | None = None
    download: bool = False
    nodes: int = Field(10, ge=1)
    partition: Literal["iid", "dirichlet", "shards", "classes", "quantity", "natural"] = (
        "dirichlet"
    )
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration (partition: dirichlet)")
    min_samples: int = Field(2, ge=1, description="minimum training samples per node")
    shards_per_node: int = Field(2, ge=1)
    classes_per_node: int | None = Field(None, ge=1)
    class_share_low: float = Field(0.8, gt=0, le=1, description="seed 001: shares ~ U(low, 1)")
    sigma: float = Field(1.0, ge=0, description="log-normal sigma of quantity skew")
    val_fraction: float = Field(0.1, ge=0, lt=1)
    val_from_train: bool = Field(
        False, description="seed 001: validation = the node's whole training shard"
    )
    train_samples: int | None = Field(None, ge=1, description="use a random subset of train")
    test_samples: int | None = Field(None, ge=1, description="use a random subset of test")
    normalize: bool = True
    augment: bool = False
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)


class ModelConfig(Section):
    name: str = "cnn"
    norm: Literal["batch", "group", "none"] = "group"
    width: float = Field(1.0, gt=0)
    group_channels: int = Field(32, ge=1, description="channels per GroupNorm group")
    dropout: float = Field(0.0, ge=0, lt=1)
    last_dropout: float = Field(0.0, ge=0, lt=1)
    hidden: list[int] = Field(default_factory=lambda: [200, 200], description="mlp widths")
    stem: Literal["cifar", "imagenet"] = "cifar"


class TrainConfig(Section):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    l2_lambda: float = Field(0.0, ge=0, description="adds ½λ‖w‖² to the loss (seed 001)")
    batch_size: int = Field(32, ge=1)
    local_epochs: float = Field(1.0, gt=0)
    local_steps: int | None = Field(None, ge=1, description="overrides local_epochs")
    scheduler: Literal["none", "step"] = "none"
    step_size: int = Field(1, ge=1, description="StepLR period in rounds")
    gamma: float = Field(0.9, gt=0)


class AlgorithmConfig(Section):
    """Base of every algorithm's config; subclasses fix ``name`` with a Literal."""

    name: str
    kind: ClassVar[Literal["federated", "decentralized", "async", "centralized"]] = "federated"


ALGORITHM_CONFIGS: dict[str, type[AlgorithmConfig]] = {}


def register_algorithm_config(name: str):  # type: ignore[no-untyped-def]
    """Class decorator: make ``algorithm.name: <name>`` select this config class."""

    def add(cls: type[AlgorithmConfig]) -> type[AlgorithmConfig]:
        ALGORITHM_CONFIGS[name] = cls
        return cls

    return add


class TopologyConfig(Section):
    name: str = Field("ring", description="a registered topology (fedweave.topology)")
    mixing: Literal["metropolis", "uniform", "max_degree"] = "metropolis"
    degree: int = Field(3, ge=1)
    p: float = Field(0.3, gt=0, le=1)
    edges: list[tuple[int, int]] | None = None
    file: Path | None = Field(None, description="edge list file or the seed's node_list.json")
    hosts: Path | None = Field(None, description="the seed's hosts.json (for torchrun)")


class ClockConfig(Section):
    """Virtual clock: per-node compute speed, bandwidth, faults (DESIGN §3 Clock)."""

    asynchronous: bool = False
    seconds_per_sample: float = Field(1e-3, gt=0)
    speed_sigma: float = Field(0.0, ge=0, description="log-normal spread of node speeds")
    speeds: list[float] | None = Field(None, description="explicit per-node speed factors")
    trace: Path | None = None
    bandwidth_up: float = Field(1e9, gt=0, description="bytes/s per node")
    bandwidth_down: float = Field(1e9, gt=0, description="bytes/s per node")
    latency_s: float = Field(0.0, ge=0)
    client_dropout: float = Field(0.0, ge=0, lt=1)
    link_drop: float = Field(0.0, ge=0, lt=1, description="probability an exchange is lost")
    swap_timeout: float | None = Field(None, gt=0, description="seconds; late exchange drops")


class EngineConfig(Section):
    name: Literal["local", "distributed"] = "local"
    backend: Literal["auto", "loop", "vectorized"] = "auto"
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    timeout_s: float = Field(300.0, gt=0, description="distributed: peer timeout")
    exchange: Literal["auto", "all_gather", "point_to_point"] = Field(
        "auto", description="distributed decentralized runs: all-gather every node's "
        "gradients, or split the nodes and send neighbour messages point to point")


class OutputConfig(Section):
    dir: Path = Path("runs")
    checkpoint_every: int = Field(1, ge=0, description="rounds between checkpoints; 0 = never")
    eval_every: int = Field(1, ge=1)
    plots: bool = True
    progress: bool = True


class Config(Section):
    name: str = "fedavg-digits"
    seed: int = 0
    rounds: int = Field(30, ge=1)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    algorithm: SerializeAsAny[AlgorithmConfig] = Field(
        default_factory=lambda: _algorithm_config({"name": "fedavg"})
    )
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @field_validator("algorithm", mode="before")
    @classmethod
    def _select_algorithm(cls, value: Any) -> Any:
        if isinstance(value, AlgorithmConfig):
            return value
        if not isinstance(value, dict):
            raise ValueError("must be a mapping with a 'name' key")
        return _algorithm_config(value)

    @model_validator(mode="after")
    def _check(self) -> Config:
        if self.data.partition == "classes" and self.data.classes_per_node is None:
            raise ValueError("data.classes_per_node is required when data.partition is 'classes'")
        return self


def _algorithm_config(value: dict[str, Any]) -> AlgorithmConfig:
    import fedweave.algorithms  # noqa: F401  (registers the built-in algorithm configs)

    value = {"name": "fedavg", **value}
    name = value["name"]
    if name not in ALGORITHM_CONFIGS:
        raise ValueError(
            f"unknown algorithm {name!r}; choose one of: {', '.join(sorted(ALGORITHM_CONFIGS))}"
        )
    return ALGORITHM_CONFIGS[name].model_validate(value)


# ---------------------------------------------------------------------------- loading


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
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


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` strings to a nested dict (in place) and return it."""
    for item in overrides:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected dotted.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: {part!r} is not a section")
            node = child
        node[parts[-1]] = _parse_value(raw)
    return data


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``config error: data.alpha: Input should be greater than 0``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{loc}: {msg}")
    return "config error: " + "; ".join(lines)


def validate_config(data: dict[str, Any]) -> Config:
    """Validate a nested dict into a ``Config``; problems raise ``UserError`` naming the key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(format_validation_error(exc)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML/TOML file (or the defaults when ``path`` is None) and apply overrides."""
    data = _read_file(Path(path)) if path is not None else {}
    return validate_config(apply_overrides(data, list(overrides or [])))


def config_to_dict(config: Config) -> dict[str, Any]:
    """A plain, YAML-safe dict of the fully resolved config."""
    return config.model_dump(mode="json")


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
