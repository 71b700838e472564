"""Dataset sources: readers of the real on-disk formats and the built-in generators.

Every loader returns a :class:`Dataset` with images stored once as uint8 NCHW (features as
float32 ``[N, D]``) and labels as int64. Files are read from ``data.root`` (default
``$FEDWEAVE_DATA`` or ``~/.cache/fedweave``) in torchvision's layout; a missing dataset raises
:class:`DatasetMissingError` naming the expected path and how to get it. Users add datasets with
``@register_dataset("name")`` on a ``loader(cfg, root, seed) -> Dataset``.

One module per format family: ``base`` (registry, ``load_dataset``, helpers), ``builtin``
(digits, synthetic), ``idx`` (MNIST family), ``leaf`` (FEMNIST), ``leaf_suite`` (Shakespeare,
CelebA), ``cifar``, ``svhn`` (.mat), ``images`` (PIL folders), ``arrays`` (.npz), ``hf``
(Hugging Face). Importing this package registers all of them.
"""

from fedweave.data.sources import arrays, builtin, cifar, hf, idx, images, leaf, leaf_suite, svhn
from fedweave.data.sources.base import (
    DATASETS,
    Dataset,
    Loader,
    dataset_status,
    default_root,
    load_dataset,
    register_dataset,
    to_float,
)
from fedweave.data.sources.builtin import SYNTHETIC_MAX_SAMPLES, load_digits, load_synthetic
from fedweave.data.sources.idx import (
    EMNIST_BALANCED_CLASSES,
    EMNIST_SPLIT,
    FASHION_SYSTEM_DIR,
    read_idx,
)
from fedweave.data.sources.images import IMAGE_EXTENSIONS, IMAGE_SIZE
from fedweave.errors import DatasetMissingError

__all__ = [
    "DATASETS", "EMNIST_BALANCED_CLASSES", "EMNIST_SPLIT", "FASHION_SYSTEM_DIR",
    "IMAGE_EXTENSIONS", "IMAGE_SIZE", "SYNTHETIC_MAX_SAMPLES", "Dataset", "DatasetMissingError",
    "Loader", "arrays", "builtin", "cifar", "dataset_status", "default_root", "hf", "idx",
    "images", "leaf", "leaf_suite", "load_dataset", "load_digits", "load_synthetic", "read_idx",
    "register_dataset", "svhn", "to_float",
]
