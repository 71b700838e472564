"""LEAF FEMNIST json reader: the natural writer partition."""

from __future__ import annotations

import json
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
from fedweave.data.sources.cache import decoded_cache

FEMNIST_CLASSES = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_LEAF = "LEAF (github.com/TalwalkarLab/leaf, data/femnist/preprocess.sh)"
FEMNIST_HOW = (f"`fedweave data download femnist` fetches LEAF's raw sources and says how to "
               f"generate it with {_LEAF}; copy data/train and data/test there, or set data.root")
FEMNIST_FIX = f"regenerate it with {_LEAF}"


def read_leaf_file(path: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """One LEAF json file → ``(writer, uint8 images [n, 1, 28, 28], int64 labels [n])`` per
    user, in the order of ``users``.

    Accepts ``{"users": [names], "user_data": {name: {"x": [[784 numbers in 0..1]], "y":
    [ints in 0..61]}}}`` (``num_samples`` and other keys are ignored); pixels become
    ``rint(255·x)`` clipped to 0..255. Bad json, missing keys, rows that are not 784 finite
    numbers, or labels outside 0..61 are a :class:`UserError` naming the file."""
    try:
        blob = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise unreadable(path, f"not a readable LEAF json file ({reason(e)})",
                         FEMNIST_FIX) from None
    users = blob.get("users") if isinstance(blob, dict) else None
    user_data = blob.get("user_data") if isinstance(blob, dict) else None
    if not isinstance(users, list) or not isinstance(user_data, dict):
        raise unreadable(path, 'expected an object with "users" (a list) and "user_data" '
                               "(an object)", FEMNIST_FIX)
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    for user in users:
        data = user_data.get(user) if isinstance(user, str) else None
        if not isinstance(data, dict) or "x" not in data or "y" not in data:
            raise unreadable(path, f'user {user!r} has no "x" and "y" in "user_data"',
                             FEMNIST_FIX)
        try:
            with np.errstate(over="ignore"):  # 1e39 becomes inf, refused below
                x = np.asarray(data["x"], dtype=np.float32)
            y = np.asarray(data["y"], dtype=np.float64)
        except (ValueError, TypeError, OverflowError) as e:
            raise unreadable(path, f"user {user!r}: x and y must be numbers ({reason(e)})",
                             FEMNIST_FIX) from None
        if x.size == 0:
            x = x.reshape(0, 784)
        if x.ndim != 2 or x.shape[1] != 784 or not np.isfinite(x).all():
            raise unreadable(path, f"user {user!r}: x must be rows of 784 finite numbers "
                                   f"(found shape {x.shape})", FEMNIST_FIX)
        if y.shape != (len(x),) or (y.size and not (
                y.min() >= 0 and y.max() < len(FEMNIST_CLASSES) and (y == np.round(y)).all())):
            raise unreadable(path, f"user {user!r}: y must hold {len(x)} labels in "
                                   f"0..{len(FEMNIST_CLASSES) - 1}", FEMNIST_FIX)
        pixels = np.rint(x * 255.0).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)
        out.append((user, pixels, y.astype(np.int64)))
    return out


def _leaf_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.json"))


def _read_leaf(files: list[Path], folder: Path, writers: dict[str, int]
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    gs: list[np.ndarray] = []
    for path in files:
        for user, x, y in read_leaf_file(path):
            xs.append(x)
            ys.append(y)
            gs.append(np.full(len(y), writers.setdefault(user, len(writers))))
    if not xs:
        raise missing("femnist", [folder / "*.json"], FEMNIST_HOW)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs).astype(np.int64)


@register_dataset("femnist", lambda root: [(root / "femnist", [root / "femnist" / "train"])])
def load_femnist(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """LEAF FEMNIST json: ``root/femnist/{train,test}/*.json`` (see :func:`read_leaf_file`)
    → uint8 [N, 1, 28, 28] (LEAF's convention kept: white background = 255), 62 classes,
    ``train_groups`` = writer index in order of first appearance (sorted files). Decoded once,
    cached in ``root/femnist/fedweave-cache/`` (rebuilt when any json file changes)."""
    base = root / "femnist"
    if not (base / "train").is_dir() or not (base / "test").is_dir():
        raise missing("femnist", [base / "train", base / "test"], FEMNIST_HOW)
    train, test = _leaf_files(base / "train"), _leaf_files(base / "test")

    def build() -> dict[str, np.ndarray]:
        writers: dict[str, int] = {}
        tx, ty, tg = _read_leaf(train, base / "train", writers)
        vx, vy, vg = _read_leaf(test, base / "test", writers)
        return {"tx": tx, "ty": ty, "tg": tg, "vx": vx, "vy": vy, "vg": vg}

    t = {k: torch.from_numpy(v) for k, v in
         decoded_cache("femnist", [*train, *test], build,
                       names=("tx", "ty", "tg", "vx", "vy", "vg"),
                       near=base, root=root).items()}
    return image_dataset("femnist", t["tx"], t["ty"], t["vx"], t["vy"], num_classes=62,
                         classes=list(FEMNIST_CLASSES), train_groups=t["tg"],
                         test_groups=t["vg"])
