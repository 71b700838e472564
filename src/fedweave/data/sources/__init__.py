"""Dataset sources: readers of the real on-disk formats and the built-in generators.

Every loader returns a :class:`Dataset` with images stored once as uint8 NCHW (features as
float32 ``[N, D]``) and labels as int64. Files are read from ``data.root`` (default
``$FEDWEAVE_DATA`` or ``~/.cache/fedweave``) in torchvision's layout; a missing dataset raises
:class:`DatasetMissingError` naming the expected path and how to get it. Users add datasets with
``@register_dataset("name")`` on a ``loader(cfg, root, seed) -> Dataset``.

One module per format family: ``base`` (registry, ``load_dataset``, helpers), ``builtin``
(digits, synthetic), ``idx`` (MNIST family), ``leaf`` (FEMNIST), ``leaf_suite``
(Shakespeare, CelebA), ``cifar``, ``svhn`` (.mat),
``images`` (PIL folders), ``arrays`` (.npz), ``hf`` (Hugging Face). A run imports only the
module of the dataset it names (``DATASETS.get`` imports it on first use).
"""

from importlib import import_module
from typing import Any

from fedweave.data.sources.base import (
    BUILTIN_DATASETS,
    DATASETS,
    Dataset,
    Loader,
    dataset_status,
    default_root,
    load_dataset,
    register_dataset,
    to_float,
)
from fedweave.errors import DatasetMissingError

_MODULES = ("arrays", "builtin", "cache", "cifar", "hf", "idx", "images", "leaf", "leaf_suite",
            "svhn")
_FROM = {"SYNTHETIC_MAX_SAMPLES": "builtin", "load_digits": "builtin",
         "load_synthetic": "builtin", "EMNIST_BALANCED_CLASSES": "idx", "EMNIST_SPLIT": "idx",
         "FASHION_SYSTEM_DIR": "idx", "read_idx": "idx", "IMAGE_EXTENSIONS": "images",
         "IMAGE_SIZE": "images"}

__all__ = [
    "BUILTIN_DATASETS", "DATASETS", "Dataset", "DatasetMissingError", "Loader",
    "dataset_status", "default_root", "load_dataset", "register_dataset", "to_float",
    *_MODULES, *_FROM,
]


def __getattr__(name: str) -> Any:
    """The format modules and their names, imported on first use."""
    if name in _MODULES:
        return import_module(f"{__name__}.{name}")
    if name in _FROM:
        return getattr(import_module(f"{__name__}.{_FROM[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
