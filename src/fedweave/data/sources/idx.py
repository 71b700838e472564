"""IDX readers (LeCun's MNIST format): MNIST, Fashion-MNIST and EMNIST 'balanced'."""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedweave.config import DataConfig
from fedweave.data.sources.base import (
    Dataset,
    Stats,
    image_dataset,
    missing,
    reason,
    redownload,
    register_dataset,
    unreadable,
)
from fedweave.data.sources.cache import decoded_cache

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
EMNIST_SPLIT = "balanced"
EMNIST_BALANCED_CLASSES = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")

_IDX_DTYPES: dict[int, str] = {
    0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}
IDX_MAX_BYTES = 1 << 34  # 16 GiB: EMNIST 'byclass' train images, the largest real file, are 0.55 GB
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_EMNIST_FILES = tuple(f"emnist-{EMNIST_SPLIT}-{s}-{k}-ubyte" for s in ("train", "test")
                      for k in ("images-idx3", "labels-idx1"))


def read_idx(path: Path, fix: str = "replace it with an intact copy") -> np.ndarray:
    """An IDX file (LeCun's MNIST format), gzipped if the name ends in ``.gz``.

    Accepts: the magic ``0 0 <dtype> <ndim>`` (dtype 0x08 u1, 0x09 i1, 0x0B i2, 0x0C i4,
    0x0D f4, 0x0E f8; ndim ≥ 1), ndim big-endian uint32 sizes, then at least ``prod(sizes)``
    row-major big-endian values (bytes after them are ignored). Only the declared amount is
    read, and at most :data:`IDX_MAX_BYTES`. Anything else (bad magic, short header or body,
    broken gzip stream, unreadable file) raises :class:`UserError` naming the file and
    ``fix``. The result is a writable array (so ``torch.from_numpy`` does not warn)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            head = _read_exactly(f, 4)
            if (len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_DTYPES
                    or head[3] == 0):
                raise unreadable(path, "not an IDX file (bad magic number)", fix)
            ndim = head[3]
            dims = _read_exactly(f, 4 * ndim)
            if len(dims) < 4 * ndim:
                raise unreadable(path, f"truncated IDX header ({ndim} sizes expected)", fix)
            shape = struct.unpack(f">{ndim}I", dims)
            dtype = np.dtype(_IDX_DTYPES[head[2]])
            count = math.prod(shape)
            nbytes = count * dtype.itemsize
            if nbytes > IDX_MAX_BYTES:
                raise unreadable(path, f"IDX header declares shape {shape} ({nbytes} bytes), "
                                       "more than any real dataset", fix)
            data = _read_upto(f, nbytes)  # grows with what is there: a bogus size costs nothing
            got = len(data)
            if got < nbytes:
                raise unreadable(path, f"truncated: expected {count} values of shape {shape}, "
                                       f"the file holds {got // dtype.itemsize}", fix)
            f.read(1 << 20)  # a gzip stream is checked (CRC, length) when its end is reached
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise unreadable(path, f"unreadable ({reason(e)})", fix) from e
    return np.frombuffer(data, dtype, count).reshape(shape)


def _read_exactly(f: io.BufferedIOBase, n: int) -> bytes:
    """Up to ``n`` bytes, fewer only at the end of the file."""
    return bytes(_read_upto(f, n))


def _read_upto(f: io.BufferedIOBase, n: int) -> bytearray:
    """Up to ``n`` bytes in chunks of at most 16 MiB (fewer only at the end of the file), so
    memory follows the data actually present, not a size claimed by a header."""
    out = bytearray()
    while len(out) < n:
        chunk = f.read(min(n - len(out), 1 << 24))
        if not chunk:
            break
        out += chunk
    return out


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


_IDX_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")


def _load_idx_dataset(name: str, dirs: Sequence[Path], bases: Sequence[str], how: str | None,
                      num_classes: int, root: Path) -> list[np.ndarray]:
    """The IDX files ``bases`` (train images, train labels, test images, test labels) from the
    first folder of ``dirs`` holding all of them, checked: uint8 images ``[N, H, W]`` and uint8
    labels ``[N]`` in ``0..num_classes-1``, train and test images of one size. Decoded arrays
    are cached as ``.npy`` (see :mod:`fedweave.data.sources.cache`), keyed by the files."""
    located = next(((d, f) for d in dirs if (f := _find_idx(d, bases)) is not None), None)
    if located is None:
        raise missing(name, [Path(d) / f"{bases[0]}[.gz]" for d in dirs], how)
    folder, files = located

    def build() -> dict[str, np.ndarray]:
        arrays = [read_idx(p, redownload(name)) for p in files]
        _check_idx(name, files, arrays, num_classes)
        return dict(zip(_IDX_ARRAYS, arrays, strict=True))

    cached = decoded_cache(name, files, build, names=_IDX_ARRAYS, near=folder, root=root)
    return [cached[k] for k in _IDX_ARRAYS]


def _check_idx(name: str, files: Sequence[Path], arrays: Sequence[np.ndarray], num_classes: int
               ) -> None:
    fix = redownload(name)
    for k in (0, 2):
        images, labels = arrays[k], arrays[k + 1]
        if images.dtype != np.uint8 or images.ndim != 3:
            raise unreadable(files[k], f"expected uint8 images [N, H, W], found {images.dtype} "
                                       f"of shape {images.shape}", fix)
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise unreadable(files[k + 1], f"expected uint8 labels [N], found {labels.dtype} of "
                                           f"shape {labels.shape}", fix)
        if len(labels) != len(images):
            raise unreadable(files[k + 1], f"{len(labels)} labels for {len(images)} images in "
                                           f"{files[k].name}", fix)
        if len(labels) and int(labels.max()) >= num_classes:
            raise unreadable(files[k + 1],
                             f"label {int(labels.max())} outside 0..{num_classes - 1}", fix)
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise unreadable(files[2], f"images of size {arrays[2].shape[1:]}, but the training "
                                   f"images are {arrays[0].shape[1:]}", fix)


def _mnist_like(name: str, root: Path, how: str | None, stats: Stats, classes: list[str]
                ) -> Dataset:
    tx, ty, vx, vy = _load_idx_dataset(name, _idx_dirs(name, root), _IDX_FILES, how, 10, root)
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
    tx, ty, vx, vy = _load_idx_dataset("emnist", _emnist_dirs(root), _EMNIST_FILES, None,
                                       len(EMNIST_BALANCED_CLASSES), root)
    return image_dataset("emnist", tx.transpose(0, 2, 1)[:, None].copy(), ty.astype(np.int64),
                         vx.transpose(0, 2, 1)[:, None].copy(), vy.astype(np.int64),
                         num_classes=len(EMNIST_BALANCED_CLASSES),
                         classes=EMNIST_BALANCED_CLASSES)
