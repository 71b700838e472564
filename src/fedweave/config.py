"""The experiment configuration: one pydantic model tree (DESIGN §4, a contract).

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

import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

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
    #: True when ``clock.asynchronous`` changes how the algorithm runs
    supports_async: ClassVar[bool] = False
    #: True when the server combines client rows with the ``aggregator`` section's rule
    uses_aggregator: ClassVar[bool] = False


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
    backend: Literal["auto", "loop", "vectorized", "fused"] = Field(
        "auto", description="how local gradients are computed: loop (one model at a time), "
        "vectorized (vmap over the node stack), fused (batched matmuls for Linear/ReLU stacks, "
        "whole local rounds on per-layer stacks); auto: fused when the model is a Linear/ReLU "
        "stack, else the faster of loop and vectorized")
    device: str = "auto"
    threads: int | None = Field(None, ge=1, description="intra-op threads (torch); null = "
                                "PyTorch's default")
    chunk: int | None = Field(
        None, ge=1, description="rows per batched kernel call of the vectorized and fused "
        "engines; processes hold whole chunks, so results are bit-identical for any process "
        "count. null = min(8 on a CPU / 64 on a GPU, the rows trained together)")
    timeout_s: float = Field(300.0, gt=0, description="distributed: peer timeout")
    exchange: Literal["auto", "all_gather", "point_to_point"] = Field(
        "auto", description="distributed decentralized runs: all-gather every node's "
        "gradients, or split the nodes and send neighbour messages point to point")


class OutputConfig(Section):
    dir: Path = Field(Path("runs"), description="parent folder of run directories (--out)")
    checkpoint_every: int = Field(1, ge=0, description="rounds between checkpoints; 0 = never")
    keep: Literal["latest", "every_k", "best", "all"] = Field(
        "latest", description="checkpoints kept: the newest (and its predecessor as a "
        "fallback), also every keep_every-th round, also the best by validation accuracy, or "
        "all")
    keep_every: int = Field(10, ge=1, description="keep: every_k keeps rounds divisible by this")
    eval_every: int = Field(1, ge=1, description="rounds between evaluations (the last round "
                            "is always evaluated)")
    plots: bool = Field(True, description="draw plots/*.png at the end of the run")
    progress: bool = Field(True, description="progress bar / log lines on the terminal "
                           "(informational)", json_schema_extra={"informational": True})


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
                      "<output.dir>/<name>-<timestamp>")
    seed: int = Field(0, description="root of every random stream (seed, purpose, round, node)")
    rounds: int = Field(30, ge=1, description="federated rounds, decentralized epochs, or "
                        "server updates of asynchronous algorithms")
    plugins: list[str] = Field(default_factory=list, description="modules imported before the "
                               "config is resolved (they register models, datasets, "
                               "algorithms, aggregators); also --import")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    algorithm: SerializeAsAny[AlgorithmConfig] = Field(
        default_factory=lambda: _default_algorithm(),
        description="the algorithm, chosen by algorithm.name (its keys follow)")
    aggregator: SerializeAsAny[AggregatorConfig] = Field(default_factory=AggregatorConfig)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

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
        alg = self.algorithm
        kind = alg.kind
        if kind != "decentralized":
            changed = _changed(self.topology)
            if changed:
                raise ValueError(
                    f"topology.{changed[0]} applies to decentralized algorithms only; "
                    f"algorithm.name={alg.name} is {kind}: remove the topology section")
        if self.clock.asynchronous and not alg.supports_async:
            raise ValueError(
                f"clock.asynchronous: algorithm.name={alg.name} runs synchronous rounds; choose "
                "an asynchronous algorithm (fedasync, fedbuff, fedfix, prfl) or a decentralized "
                "one, or set clock.asynchronous=false")
        for key in ("link_drop", "swap_timeout"):
            if kind != "decentralized" and key in _changed(self.clock):
                raise ValueError(f"clock.{key} is a fault of peer exchanges; algorithm.name="
                                 f"{alg.name} is {kind}")
        if self.clock.client_dropout and kind != "federated":
            raise ValueError(
                f"clock.client_dropout applies to federated cohorts; algorithm.name={alg.name} "
                f"is {kind}")
        if self.aggregator.name is not None and not alg.uses_aggregator:
            raise ValueError(
                f"aggregator.name={self.aggregator.name}: algorithm.name={alg.name} does not "
                "aggregate client rows; remove the aggregator section")
        return self


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


def read_raw(path: Path) -> dict[str, Any]:
    """The mapping in a YAML (or ``.toml``) config file; unreadable files, syntax errors (with
    file:line) and duplicate keys are one-line ``UserError``s."""
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a text file (expected UTF-8 YAML or TOML)") from None
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    if "\x00" in text:
        raise UserError(f"{path}: not a text file (it contains NUL bytes)")
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
