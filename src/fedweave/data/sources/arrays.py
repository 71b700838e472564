"""numpy ``.npz`` archives of ready-made arrays (DESIGN §6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.sources.base import Dataset, image_dataset, missing, register_dataset
from fedweave.errors import UserError


def _npz_images(x: np.ndarray) -> np.ndarray:
    """NHWC → NCHW when the last axis looks like channels (1, 3 or 4) and axis 1 does not;
    [N, H, W] gets a channel axis."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def _npz_path(root: Path) -> Path:
    return root if root.suffix == ".npz" else root / "data.npz"


@register_dataset("npz", lambda root: [(_npz_path(root), [_npz_path(root)])])
def load_npz(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """A numpy ``.npz`` at ``data.root`` (or ``data.root/data.npz``) with ``x_train, y_train,
    x_test, y_test``: uint8 images ([N, H, W], NHWC or NCHW) are kept as uint8 NCHW with
    mean/std from train; anything else is float32 features ``[N, D]`` (flattened)."""
    path = _npz_path(root)
    if not path.is_file():
        raise missing("npz", [path], "set data.root to a .npz file with x_train, y_train, "
                                      "x_test, y_test")
    with np.load(path) as blob:
        absent = {"x_train", "y_train", "x_test", "y_test"} - set(blob.files)
        if absent:
            raise UserError(f"{path} lacks arrays {sorted(absent)}")
        tx, ty, vx, vy = (blob[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    ty, vy = ty.astype(np.int64).reshape(-1), vy.astype(np.int64).reshape(-1)
    if tx.dtype == np.uint8 and tx.ndim in (3, 4):
        return image_dataset("npz", _npz_images(tx), ty, _npz_images(vx), vy)
    n_cls = int(max(ty.max(), vy.max())) + 1
    return Dataset("npz", torch.from_numpy(tx.reshape(len(tx), -1).astype(np.float32)),
                   torch.from_numpy(ty), torch.from_numpy(vx.reshape(len(vx), -1)
                                                          .astype(np.float32)),
                   torch.from_numpy(vy), n_cls, None, None)
