"""fedweave: fast, deterministic collaborative-learning research (federated, decentralized,
one-shot, data influence) in one package.

Public API (imported lazily so ``import fedweave`` stays cheap)::

    fedweave.run(config | path | None, resume=None) -> Result
    fedweave.load_config(path | None, overrides) -> Config
    fedweave.Config, fedweave.Result
    fedweave.ALGORITHMS, fedweave.MODELS, fedweave.DATASETS   (registries users extend)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "run": "fedweave.runner", "Result": "fedweave.runner",
    "Config": "fedweave.config", "load_config": "fedweave.config",
    "ALGORITHMS": "fedweave.algorithms", "register_algorithm": "fedweave.algorithms",
    "MODELS": "fedweave.models", "register_model": "fedweave.models",
    "DATASETS": "fedweave.data.sources", "register_dataset": "fedweave.data.sources",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'fedweave' has no attribute {name!r}")
