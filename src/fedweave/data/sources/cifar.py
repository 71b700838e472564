"""CIFAR-10 / CIFAR-100 python pickle batches (DESIGN §6)."""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedweave.config import DataConfig
from fedweave.data.sources.base import Dataset, Stats, image_dataset, missing, register_dataset


def _unpickle(path: Path) -> dict[bytes, object]:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")  # the official CIFAR format


def _cifar_batches(paths: Sequence[Path], label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for path in paths:
        batch = _unpickle(path)
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(xs), np.concatenate(ys)


def _decode_names(meta: Path, key: bytes) -> list[str] | None:
    if not meta.is_file():
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in _unpickle(meta)[key]]  # type: ignore[attr-defined]


def _load_cifar(name: str, base: Path, train: Sequence[str], test: str, label_key: bytes,
                meta: str, names_key: bytes, num_classes: int, stats: Stats) -> Dataset:
    """The batches ``train`` + ``test`` in ``base`` (names from ``meta`` when present)."""
    paths = [base / f for f in (*train, test)]
    if not all(p.is_file() for p in paths):
        raise missing(name, [base])
    tx, ty = _cifar_batches(paths[:-1], label_key)
    vx, vy = _cifar_batches(paths[-1:], label_key)
    return image_dataset(name, tx, ty, vx, vy, num_classes=num_classes, stats=stats,
                         classes=_decode_names(base / meta, names_key))


@register_dataset("cifar10", lambda root: [(root / "cifar-10-batches-py",
                                            [root / "cifar-10-batches-py" / "data_batch_1"])])
def load_cifar10(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """CIFAR-10 python pickles ``root/cifar-10-batches-py/data_batch_1..5`` and ``test_batch``
    (dicts with ``b'data'`` uint8 [N, 3072] CHW rows and ``b'labels'``; names from
    ``batches.meta``) → uint8 [N, 3, 32, 32]."""
    return _load_cifar("cifar10", root / "cifar-10-batches-py",
                       [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels",
                       "batches.meta", b"label_names", 10,
                       ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)))


@register_dataset("cifar100", lambda root: [(root / "cifar-100-python",
                                             [root / "cifar-100-python" / "train"])])
def load_cifar100(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """CIFAR-100 python pickles ``root/cifar-100-python/{train,test}`` (``b'data'``,
    ``b'fine_labels'``; names from ``meta``) → uint8 [N, 3, 32, 32], 100 fine classes."""
    return _load_cifar("cifar100", root / "cifar-100-python", ["train"], "test",
                       b"fine_labels", "meta", b"fine_label_names", 100,
                       ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)))
