"""``hf:<name>``: Hugging Face Hub datasets through the optional ``datasets`` package."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.sources.base import Dataset, image_dataset, register_prefix
from fedweave.errors import DatasetMissingError, UserError


@register_prefix("hf:", "hf")
def load_hf(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """``hf:<name>``: a Hugging Face Hub dataset via the optional ``datasets`` package (cached in
    ``root/hf``), splits ``train`` and ``test`` (else ``validation``). The first ``Image`` column
    becomes uint8 NCHW (mean/std from train), else numeric columns other than the label become
    float32 features; the label is ``label`` / ``labels`` / ``fine_label`` (class names kept).
    Hub datasets that need a loading script are refused (``trust_remote_code=False`` where the
    installed ``datasets`` still has the option): no code from the Hub runs."""
    try:
        import datasets as hf
    except ImportError as e:
        raise UserError("hf:<name> datasets need the `datasets` package: "
                        "pip install 'fedweave[hf]'") from e
    name = cfg.dataset[len("hf:"):]
    options: dict[str, object] = {"cache_dir": str(root / "hf")}
    if "trust_remote_code" in inspect.signature(hf.load_dataset).parameters:
        options["trust_remote_code"] = False  # datasets 2.18-2.19 ran Hub loading scripts
    try:
        splits = hf.load_dataset(name, **options)
    except Exception as e:  # the hub client raises many types; all mean "not available"
        raise DatasetMissingError(f"Hugging Face dataset {name!r} could not be loaded into "
                                  f"{root / 'hf'}: {e}") from e
    test_split = "test" if "test" in splits else "validation"
    if "train" not in splits or test_split not in splits:
        raise UserError(f"Hugging Face dataset {name!r} needs train and test/validation splits")
    features = splits["train"].features
    label = next((k for k in ("label", "labels", "fine_label") if k in features), None)
    if label is None:
        raise UserError(f"Hugging Face dataset {name!r} has no label/labels/fine_label column")
    image = next((k for k, f in features.items() if isinstance(f, hf.Image)), None)
    names = getattr(features[label], "names", None)

    def images(split: str) -> np.ndarray:
        pics = splits[split][image]
        mode = "L" if pics[0].mode in ("1", "L") else "RGB"
        arr = np.stack([np.asarray(p.convert(mode), dtype=np.uint8) for p in pics])
        return arr[:, None] if arr.ndim == 3 else np.ascontiguousarray(arr.transpose(0, 3, 1, 2))

    def table(split: str) -> np.ndarray:
        cols = [k for k in features if k != label]
        return np.stack([np.asarray(splits[split][k], dtype=np.float32) for k in cols], axis=1)

    ty = np.asarray(splits["train"][label], dtype=np.int64)
    vy = np.asarray(splits[test_split][label], dtype=np.int64)
    n_cls = len(names) if names else int(max(ty.max(), vy.max())) + 1
    if image is not None:
        return image_dataset(cfg.dataset, images("train"), ty, images(test_split), vy,
                              num_classes=n_cls, classes=names)
    return Dataset(cfg.dataset, torch.from_numpy(table("train")), torch.from_numpy(ty),
                   torch.from_numpy(table(test_split)), torch.from_numpy(vy), n_cls, None, None,
                   classes=names)
