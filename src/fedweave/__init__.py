"""fedweave: fast, deterministic collaborative-learning research (federated, decentralized,
one-shot, data influence) in one package.

Public API (imported lazily so ``import fedweave`` stays cheap; the registries import a
built-in on first lookup, ``fedweave.run`` and ``fedweave.load_config`` only what the config
names)::

    fedweave.run(config | path | None, resume=None, overrides=None, imports=()) -> Result
    fedweave.load_config(path | None, overrides, imports) -> Config
    fedweave.load_model(run_dir, round=None, best=False, node=None) -> torch.nn.Module
    fedweave.Config, fedweave.Result
    registries users extend, with their decorators:
      ALGORITHMS / register_algorithm, MODELS / register_model, DATASETS / register_dataset,
      AGGREGATORS / register_aggregator, register_callback (Callback), Objective terms
      (DataLoss, ParamTerm)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from fedweave.version import __version__

_EXPORTS = {
    "run": "fedweave.runner", "Result": "fedweave.runner",
    "Config": "fedweave.config", "load_config": "fedweave.plugins",
    "load_model": "fedweave.export",
    "ALGORITHMS": "fedweave.algorithms", "register_algorithm": "fedweave.algorithms",
    "Algorithm": "fedweave.algorithms", "RoundResult": "fedweave.algorithms.base",
    "AGGREGATORS": "fedweave.aggregators",
    "register_aggregator": "fedweave.aggregators",
    "MODELS": "fedweave.models", "register_model": "fedweave.models",
    "DATASETS": "fedweave.data.sources", "register_dataset": "fedweave.data.sources",
    "Callback": "fedweave.callbacks", "register_callback": "fedweave.callbacks",
    "Objective": "fedweave.training.objectives", "DataLoss": "fedweave.training.objectives",
    "ParamTerm": "fedweave.training.objectives",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        if name == "Config":  # validating a Config directly needs every algorithm's config
            import_module("fedweave.plugins").load_builtins()
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fedweave' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(["__version__", *_EXPORTS])
