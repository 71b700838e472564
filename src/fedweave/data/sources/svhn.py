"""SVHN cropped digits, MATLAB ``.mat`` files (DESIGN §6)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedweave.config import DataConfig
from fedweave.data.sources.base import Dataset, image_dataset, missing, register_dataset


def _locations(root: Path) -> list[tuple[Path, list[Path]]]:
    return [(root / "svhn", [root / "svhn" / "train_32x32.mat"]),
            (root, [root / "train_32x32.mat"])]


@register_dataset("svhn", _locations)
def load_svhn(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """SVHN cropped digits ``train_32x32.mat`` / ``test_32x32.mat`` in ``root/svhn`` or ``root``
    (MATLAB: ``X`` uint8 [32, 32, 3, N], ``y`` [N, 1] with 10 meaning digit 0) →
    uint8 [N, 3, 32, 32]."""
    from scipy.io import loadmat

    for base in (root / "svhn", root):
        if (base / "train_32x32.mat").is_file() and (base / "test_32x32.mat").is_file():
            break
    else:
        raise missing("svhn", [root / "svhn" / "train_32x32.mat", root / "train_32x32.mat"])

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        mat = loadmat(path)
        x = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
        y = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
        return x, y

    tx, ty = read(base / "train_32x32.mat")
    vx, vy = read(base / "test_32x32.mat")
    return image_dataset("svhn", tx, ty, vx, vy, num_classes=10,
                         stats=((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
                         classes=[str(i) for i in range(10)])
