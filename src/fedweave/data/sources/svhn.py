"""SVHN cropped digits, MATLAB ``.mat`` files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedweave.config import DataConfig
from fedweave.data.sources.base import (
    Dataset,
    image_dataset,
    missing,
    reason,
    redownload,
    register_dataset,
    unreadable,
)

_FIX = redownload("svhn")


def read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One SVHN file: a MATLAB v4/v5 ``.mat`` (read by scipy, which only parses numbers and
    never runs code) holding numeric ``X`` [32, 32, 3, N] with values 0..255 and ``y`` (N
    integers 0..10, 10 meaning digit 0) → (uint8 [N, 3, 32, 32], int64 [N] in 0..9). Other
    variables are not read; object, cell or struct arrays, v7.3 (HDF5) files and garbled or
    truncated files are a :class:`UserError` naming the file."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, variable_names=["X", "y"])
    except NotImplementedError as e:  # what scipy says of v7.3 (HDF5) files
        raise unreadable(path, f"a MATLAB v7.3 file, not the v5 format of SVHN ({reason(e)})",
                         _FIX) from None
    except Exception as e:  # scipy's parsers raise many types on garbage
        raise unreadable(path, f"not a readable .mat file ({reason(e)})", _FIX) from None
    for key in ("X", "y"):
        value = mat.get(key)
        if not isinstance(value, np.ndarray) or value.dtype.kind not in "uifb":
            found = "nothing" if value is None else f"{type(value).__name__} " + str(
                getattr(value, "dtype", ""))
            raise unreadable(path, f"{key!r} must be a numeric array, found {found}", _FIX)
    x, y = mat["X"], mat["y"]
    if x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise unreadable(path, f"'X' has shape {x.shape}, expected [32, 32, 3, N]", _FIX)
    if x.dtype != np.uint8 and x.size and not (x.min() >= 0 and x.max() <= 255):  # NaN fails
        raise unreadable(path, "'X' values must lie in 0..255", _FIX)
    if y.size != x.shape[3] or (y.size and not (y.min() >= 0 and y.max() <= 10
                                                and np.array_equal(y, np.round(y)))):
        raise unreadable(path, f"'y' must hold {x.shape[3]} integer labels in 0..10 (found "
                               f"{y.dtype} of shape {y.shape})", _FIX)
    images = np.ascontiguousarray(np.asarray(x, dtype=np.uint8).transpose(3, 2, 0, 1))
    labels = np.asarray(y, dtype=np.int64).reshape(-1) % 10
    return images, labels


def _locations(root: Path) -> list[tuple[Path, list[Path]]]:
    return [(root / "svhn", [root / "svhn" / "train_32x32.mat"]),
            (root, [root / "train_32x32.mat"])]


@register_dataset("svhn", _locations)
def load_svhn(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """SVHN cropped digits ``train_32x32.mat`` / ``test_32x32.mat`` in ``root/svhn`` or ``root``
    (MATLAB: ``X`` uint8 [32, 32, 3, N], ``y`` [N, 1] with 10 meaning digit 0) →
    uint8 [N, 3, 32, 32]."""
    for base in (root / "svhn", root):
        if (base / "train_32x32.mat").is_file() and (base / "test_32x32.mat").is_file():
            break
    else:
        raise missing("svhn", [root / "svhn" / "train_32x32.mat", root / "train_32x32.mat"])

    tx, ty = read_svhn_mat(base / "train_32x32.mat")
    vx, vy = read_svhn_mat(base / "test_32x32.mat")
    return image_dataset("svhn", tx, ty, vx, vy, num_classes=10,
                         stats=((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
                         classes=[str(i) for i in range(10)])
