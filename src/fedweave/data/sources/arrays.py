"""numpy ``.npz`` archives of ready-made arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.sources.base import (
    Dataset,
    image_dataset,
    missing,
    reason,
    register_dataset,
    unreadable,
)
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


_KEYS = ("x_train", "y_train", "x_test", "y_test")
NPZ_FIX = "rewrite it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_train, y_train, x_test, y_test`` of a numpy ``.npz`` (read with
    ``allow_pickle=False``: object arrays are refused, nothing is unpickled), checked: numeric
    ``x`` with one sample per label and the same per-sample shape in train and test,
    non-negative integer labels, at least one sample in each split. Labels come back as int64
    ``[N]``. Anything else is a :class:`UserError` naming the file."""
    try:
        blob = np.load(path, allow_pickle=False)
        if not isinstance(blob, np.lib.npyio.NpzFile):
            raise unreadable(path, "a single .npy array, not an .npz archive", NPZ_FIX)
        with blob:
            absent = [k for k in _KEYS if k not in blob.files]
            if absent:
                raise unreadable(path, f"lacks arrays {absent}", NPZ_FIX)
            tx, ty, vx, vy = (blob[k] for k in _KEYS)
    except UserError:
        raise
    except Exception as e:  # BadZipFile, object arrays, CRC errors, truncated members, ...
        raise unreadable(path, f"not a readable .npz archive ({reason(e)})", NPZ_FIX) from None
    for key, arr in zip(_KEYS, (tx, ty, vx, vy), strict=True):
        if arr.dtype.kind not in "biuf" or arr.ndim == 0:
            raise unreadable(path, f"{key} must be a numeric array, found {arr.dtype} of "
                                   f"shape {arr.shape}", NPZ_FIX)
    labels = []
    for key, x, y in (("y_train", tx, ty), ("y_test", vx, vy)):
        y = y.reshape(-1)
        if len(y) != len(x) or not len(y):
            raise unreadable(path, f"{key} has {len(y)} labels for {len(x)} samples (at least "
                                   "one needed)", NPZ_FIX)
        if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):  # NaN fails too
            raise unreadable(path, f"{key} must hold integer class labels", NPZ_FIX)
        if y.min() < 0:
            raise unreadable(path, f"{key} has negative labels", NPZ_FIX)
        labels.append(y.astype(np.int64))
    if tx.shape[1:] != vx.shape[1:] or (tx.dtype == np.uint8) != (vx.dtype == np.uint8):
        raise unreadable(path, f"x_test ({vx.dtype} {vx.shape}) does not match x_train "
                               f"({tx.dtype} {tx.shape}) per sample", NPZ_FIX)
    return tx, labels[0], vx, labels[1]


@register_dataset("npz", lambda root: [(_npz_path(root), [_npz_path(root)])])
def load_npz(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """A numpy ``.npz`` at ``data.root`` (or ``data.root/data.npz``) with ``x_train, y_train,
    x_test, y_test`` (see :func:`read_npz`): uint8 images ([N, H, W], NHWC or NCHW) are kept
    as uint8 NCHW with mean/std from train; anything else is float32 features ``[N, D]``
    (flattened)."""
    path = _npz_path(root)
    if not path.is_file():
        raise missing("npz", [path], "set data.root to a .npz file with x_train, y_train, "
                                      "x_test, y_test")
    tx, ty, vx, vy = read_npz(path)
    if tx.dtype == np.uint8 and tx.ndim in (3, 4):
        return image_dataset("npz", _npz_images(tx), ty, _npz_images(vx), vy)
    n_cls = int(max(ty.max(), vy.max())) + 1
    return Dataset("npz", torch.from_numpy(tx.reshape(len(tx), -1).astype(np.float32)),
                   torch.from_numpy(ty), torch.from_numpy(vx.reshape(len(vx), -1)
                                                          .astype(np.float32)),
                   torch.from_numpy(vy), n_cls, None, None)
