"""LEAF FEMNIST json reader: the natural writer partition (DESIGN §6)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.sources.base import Dataset, image_dataset, missing, register_dataset
from fedweave.data.sources.cache import cached

FEMNIST_CLASSES = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_FEMNIST_HOW = ("generate it with LEAF (github.com/TalwalkarLab/leaf, data/femnist/preprocess.sh)"
                " and copy data/train and data/test there, or set data.root")


def _read_leaf(folder: Path, writers: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    gs: list[np.ndarray] = []
    for path in sorted(folder.glob("*.json")):
        with open(path) as f:
            blob = json.load(f)
        for user in blob["users"]:
            data = blob["user_data"][user]
            x = np.rint(np.asarray(data["x"], dtype=np.float32) * 255.0).clip(0, 255)
            xs.append(x.astype(np.uint8).reshape(-1, 1, 28, 28))
            ys.append(np.asarray(data["y"], dtype=np.int64))
            gs.append(np.full(len(data["y"]), writers.setdefault(user, len(writers))))
    if not xs:
        raise missing("femnist", [folder / "*.json"], _FEMNIST_HOW)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs).astype(np.int64)


@register_dataset("femnist", lambda root: [(root / "femnist", [root / "femnist" / "train"])])
def load_femnist(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """LEAF FEMNIST json: ``root/femnist/{train,test}/*.json``, each ``{"users", "num_samples",
    "user_data": {user: {"x": [[784 floats in 0..1]], "y": [label]}}}`` → uint8 [N, 1, 28, 28]
    (LEAF's convention kept: white background = 255), 62 classes, ``train_groups`` = writer
    index in order of first appearance (sorted files). Decoded once, cached in
    ``root/femnist/fedweave-cache.pt``."""
    base = root / "femnist"
    if not (base / "train").is_dir() or not (base / "test").is_dir():
        raise missing("femnist", [base / "train", base / "test"], _FEMNIST_HOW)

    def build() -> dict[str, torch.Tensor]:
        writers: dict[str, int] = {}
        tx, ty, tg = _read_leaf(base / "train", writers)
        vx, vy, _ = _read_leaf(base / "test", writers)
        return {"tx": torch.from_numpy(tx), "ty": torch.from_numpy(ty),
                "tg": torch.from_numpy(tg), "vx": torch.from_numpy(vx),
                "vy": torch.from_numpy(vy)}

    t = cached(base / "fedweave-cache.pt", build)
    return image_dataset("femnist", t["tx"], t["ty"], t["vx"], t["vy"], num_classes=62,
                         classes=list(FEMNIST_CLASSES), train_groups=t["tg"])
