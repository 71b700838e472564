"""IDX readers (LeCun's MNIST format): MNIST, Fashion-MNIST and EMNIST 'balanced'
(DESIGN §6)."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedweave.config import DataConfig
from fedweave.data.sources.base import Dataset, Stats, image_dataset, missing, register_dataset
from fedweave.errors import UserError

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
EMNIST_SPLIT = "balanced"
EMNIST_BALANCED_CLASSES = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")

_IDX_DTYPES: dict[int, str] = {
    0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_EMNIST_FILES = tuple(f"emnist-{EMNIST_SPLIT}-{s}-{k}-ubyte" for s in ("train", "test")
                      for k in ("images-idx3", "labels-idx1"))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzipped if the name ends in .gz): magic
    ``0 0 <dtype> <ndim>``, ndim big-endian uint32 sizes, then the row-major data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = bytearray(f.read())  # writable, so torch.from_numpy does not warn
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4: 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    count = int(np.prod(shape))
    offset = 4 + 4 * ndim
    if len(data) - offset < count * dtype.itemsize:
        raise UserError(f"{path} is truncated: expected {count} values of shape {shape}")
    return np.frombuffer(data, dtype, count, offset).reshape(shape)


def _idx_dirs(name: str, root: Path) -> list[Path]:
    if name == "mnist":
        return [root / "MNIST" / "raw", root / "mnist", root]
    return [root / "FashionMNIST" / "raw", root / "fashion-mnist", root, FASHION_SYSTEM_DIR]


def _emnist_dirs(root: Path) -> list[Path]:
    return [root / "EMNIST" / "raw", root / "EMNIST" / "gzip"]


def _markers(dirs: Sequence[Path], base: str) -> list[tuple[Path, list[Path]]]:
    return [(d, [d / base, d / f"{base}.gz"]) for d in dirs]


def _find_file(folder: Path, base: str) -> Path | None:
    for path in (folder / base, folder / f"{base}.gz"):
        if path.is_file():
            return path
    return None


def _find_idx(folder: Path, bases: Sequence[str]) -> list[Path] | None:
    found = [_find_file(folder, b) for b in bases]
    return None if any(p is None for p in found) else [p for p in found if p is not None]


def _load_idx_dataset(name: str, dirs: Sequence[Path], bases: Sequence[str], how: str | None
                      ) -> list[np.ndarray]:
    """The IDX files ``bases`` from the first folder of ``dirs`` holding all of them."""
    for folder in dirs:
        files = _find_idx(folder, bases)
        if files is not None:
            return [read_idx(p) for p in files]
    raise missing(name, [Path(d) / f"{bases[0]}[.gz]" for d in dirs], how)


def _mnist_like(name: str, root: Path, how: str | None, stats: Stats, classes: list[str]
                ) -> Dataset:
    tx, ty, vx, vy = _load_idx_dataset(name, _idx_dirs(name, root), _IDX_FILES, how)
    return image_dataset(name, tx[:, None], ty.astype(np.int64), vx[:, None],
                         vy.astype(np.int64), num_classes=10, stats=stats, classes=classes)


@register_dataset("mnist", lambda root: _markers(_idx_dirs("mnist", root), _IDX_FILES[0]))
def load_mnist(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """MNIST IDX files (``.gz`` or not) in ``root/MNIST/raw`` (torchvision), ``root/mnist`` or
    ``root``: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-… → uint8 [N, 1, 28, 28]."""
    return _mnist_like("mnist", root, None, ((0.1307,), (0.3081,)), [str(i) for i in range(10)])


@register_dataset("fashion-mnist",
                  lambda root: _markers(_idx_dirs("fashion-mnist", root), _IDX_FILES[0]))
def load_fashion_mnist(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Fashion-MNIST IDX files in ``root/FashionMNIST/raw`` (torchvision), ``root/fashion-mnist``,
    ``root`` or Debian's ``/usr/share/datasets/fashion-mnist`` → uint8 [N, 1, 28, 28]."""
    how = ("run `fedweave data download fashion-mnist`, set data.root, "
           "or `apt-get install dataset-fashion-mnist`")
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
    return _mnist_like("fashion-mnist", root, how, ((0.2860,), (0.3530,)), classes)


@register_dataset("emnist", lambda root: _markers(_emnist_dirs(root), _EMNIST_FILES[0]))
def load_emnist(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """EMNIST 'balanced' (47 classes) IDX files ``emnist-balanced-{train,test}-{images-idx3,
    labels-idx1}-ubyte[.gz]`` in ``root/EMNIST/raw`` (torchvision) or ``root/EMNIST/gzip`` (the
    official zip, as our download leaves it); the stored images are transposed, so they are
    transposed back to upright uint8 [N, 1, 28, 28]."""
    tx, ty, vx, vy = _load_idx_dataset("emnist", _emnist_dirs(root), _EMNIST_FILES, None)
    return image_dataset("emnist", tx.transpose(0, 2, 1)[:, None].copy(), ty.astype(np.int64),
                         vx.transpose(0, 2, 1)[:, None].copy(), vy.astype(np.int64),
                         num_classes=len(EMNIST_BALANCED_CLASSES),
                         classes=EMNIST_BALANCED_CLASSES)
