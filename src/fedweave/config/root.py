"""The root of the config tree: every section, the derived run name, the pluggable
sections' resolution, and the cross-section rules (each family's ``check(config)``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from fedweave.config.algorithm import (
    AGGREGATOR_CONFIGS,
    ALGORITHM_CONFIGS,
    AggregatorConfig,
    AlgorithmConfig,
)
from fedweave.config.base import Section
from fedweave.config.clock import ClockConfig
from fedweave.config.data import DataConfig
from fedweave.config.distill import DistillConfig
from fedweave.config.engine import EngineConfig, LauncherConfig
from fedweave.config.influence import InfluenceConfig
from fedweave.config.model import ModelConfig, TrainConfig
from fedweave.config.output import NotifyConfig, OutputConfig
from fedweave.config.privacy import PrivacyConfig
from fedweave.config.robust import AttackConfig
from fedweave.config.topology import TopologyConfig

#: rounds a run may have: beyond, it cannot finish (a million rounds of the smallest model
#: already take hours)
MAX_ROUNDS = 1_000_000


def _default_algorithm() -> AlgorithmConfig:
    cfg = ALGORITHM_CONFIGS.resolve({"name": "fedavg"})
    assert isinstance(cfg, AlgorithmConfig)
    return cfg


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
    engine: EngineConfig = Field(default_factory=EngineConfig,
                                 description="how local training is computed")
    launcher: LauncherConfig = Field(default_factory=LauncherConfig,
                                     description="how the run's processes start")
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

    @field_validator("rounds")
    @classmethod
    def _finishable(cls, value: int) -> int:
        if value > MAX_ROUNDS:
            raise ValueError(f"{value} rounds cannot finish (every round is evaluated or "
                             f"checkpointed on its schedule and recorded); at most {MAX_ROUNDS:,}")
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
        """Rules between sections: each family checks its keys against the rest."""
        self.data.check(self)
        self.topology.check(self)
        self.clock.check(self)
        self.distill.check(self)
        self.aggregator.check(self)
        self.algorithm.check(self)
        self.attack.check(self)
        self.privacy.check(self)
        return self
