"""The experiment configuration: one pydantic model tree (a contract).

Loaded from YAML or TOML, every field overridable with ``--set dotted.key=value``. Unknown keys
and wrong types are errors naming the key. Pluggable sections (``algorithm``, ``aggregator``)
are chosen by their ``name`` from registries of config classes that the algorithm and
aggregator modules fill when they are imported (``register_algorithm_config``,
``register_aggregator_config``), so keys of other algorithms are rejected and users add
algorithms without touching this package. This package imports no algorithm: the program's
entry points (CLI, ``fedweave.run``, ``fedweave.load_config``) load the built-in and plugin
registrations first (``fedweave.plugins``).

One module per family of sections, each section's rules against the rest of the tree in its
own ``check(config)`` (called by the root ``Config``):

- ``data`` (dataset, partition, noise, pruning), ``model`` (``model`` and ``train``),
  ``algorithm`` (the pluggable ``algorithm`` and ``aggregator``: federated cohort and server
  keys), ``clock`` (synchronous and asynchronous timing, faults), ``topology`` (peers),
  ``distill`` (one-shot), ``influence``, ``privacy`` and ``robust`` (``attack``), ``engine``
  (``engine``, ``launcher``), ``output`` (``output``, ``notify``);
- ``root`` (``Config``), ``load`` (files, ``--set``, validation, dumping);
- ``no_effect`` (warnings for keys that cannot act under the chosen settings) and
  ``reference`` (the generated key reference, ``docs/config.md``), imported on use.
"""

from fedweave.config.algorithm import (
    AGGREGATOR_CONFIGS,
    ALGORITHM_CONFIGS,
    AggregatorConfig,
    AlgorithmConfig,
    register_aggregator_config,
    register_algorithm_config,
)
from fedweave.config.base import Pluggable, RootView, Section, changed
from fedweave.config.clock import ClockConfig
from fedweave.config.data import DataConfig, PruneConfig, SyntheticConfig
from fedweave.config.distill import (
    SYNTHESIS_PRESETS,
    Baseline,
    DistillConfig,
    StudentConfig,
    SynthesisConfig,
)
from fedweave.config.engine import DEVICE, EngineConfig, LauncherConfig
from fedweave.config.influence import DICEConfig, EL2NConfig, InfluenceConfig
from fedweave.config.load import (
    apply_overrides,
    config_to_dict,
    did_you_mean,
    dump_config,
    format_validation_error,
    load_config,
    load_raw,
    read_raw,
    read_text,
    validate_config,
)
from fedweave.config.model import ModelConfig, TrainConfig
from fedweave.config.output import NotifyConfig, OutputConfig
from fedweave.config.privacy import PrivacyConfig
from fedweave.config.robust import AttackConfig
from fedweave.config.root import Config
from fedweave.config.topology import TopologyConfig

__all__ = [
    "AGGREGATOR_CONFIGS", "ALGORITHM_CONFIGS", "DEVICE", "SYNTHESIS_PRESETS",
    "AggregatorConfig", "AlgorithmConfig", "AttackConfig", "Baseline", "ClockConfig", "Config",
    "DICEConfig", "DataConfig", "DistillConfig", "EL2NConfig", "EngineConfig",
    "InfluenceConfig", "LauncherConfig", "ModelConfig", "NotifyConfig", "OutputConfig", "Pluggable",
    "PrivacyConfig", "PruneConfig", "RootView", "Section", "StudentConfig", "SynthesisConfig",
    "SyntheticConfig", "TopologyConfig", "TrainConfig", "apply_overrides", "changed",
    "config_to_dict", "did_you_mean", "dump_config", "format_validation_error", "load_config",
    "load_raw", "read_raw", "read_text", "register_aggregator_config",
    "register_algorithm_config", "validate_config",
]
