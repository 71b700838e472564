"""Image-file readers (PIL): Tiny-ImageNet-200, cats-vs-dogs and any ImageFolder tree
(DESIGN §6)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.sources.base import Dataset, image_dataset, missing, register_dataset
from fedweave.data.sources.cache import cached

IMAGE_SIZE = 64  # ImageFolder / cats-vs-dogs images are center-cropped and resized to this
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def _decode_images(paths: Sequence[Path], size: int | None) -> np.ndarray:
    """RGB uint8 [N, 3, S, S] from image files (PIL, threaded). With ``size``, each image is
    center-cropped to a square and resized to ``size``; without, all must share one size."""
    from PIL import Image

    def one(path: Path) -> np.ndarray:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        if size is not None and rgb.size != (size, size):
            w, h = rgb.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            rgb = rgb.crop((left, top, left + side, top + side)).resize(
                (size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)

    if not paths:
        return np.zeros((0, 3, size or 0, size or 0), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return np.stack(list(pool.map(one, paths)))


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


@register_dataset("tiny-imagenet", lambda root: [(root / "tiny-imagenet-200",
                                                  [root / "tiny-imagenet-200" / "wnids.txt"])])
def load_tiny_imagenet(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Tiny-ImageNet-200 ``root/tiny-imagenet-200``: ``wnids.txt`` (class ids, sorted for the
    label order), optional ``words.txt`` (names), ``train/<wnid>/images/*.JPEG`` and the labelled
    ``val/images`` + ``val/val_annotations.txt`` (tab-separated ``file wnid x y w h``) used as
    the test set → uint8 [N, 3, 64, 64]. Decoded once, cached in ``fedweave-cache.pt``."""
    base = root / "tiny-imagenet-200"
    if not (base / "wnids.txt").is_file() or not (base / "val" / "val_annotations.txt").is_file():
        raise missing("tiny-imagenet", [base])
    wnids = sorted(w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip())
    index = {w: i for i, w in enumerate(wnids)}

    def build() -> dict[str, torch.Tensor]:
        train_paths: list[Path] = []
        train_labels: list[int] = []
        for wnid in wnids:
            files = sorted(p for p in (base / "train" / wnid / "images").iterdir() if _is_image(p))
            train_paths += files
            train_labels += [index[wnid]] * len(files)
        val_paths: list[Path] = []
        val_labels: list[int] = []
        for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
            fields = line.split("\t")
            if len(fields) >= 2:
                val_paths.append(base / "val" / "images" / fields[0])
                val_labels.append(index[fields[1]])
        return {"tx": torch.from_numpy(_decode_images(train_paths, 64)),
                "ty": torch.tensor(train_labels, dtype=torch.int64),
                "vx": torch.from_numpy(_decode_images(val_paths, 64)),
                "vy": torch.tensor(val_labels, dtype=torch.int64)}

    t = cached(base / "fedweave-cache.pt", build)
    names = wnids
    words = base / "words.txt"
    if words.is_file():
        table = dict(line.split("\t", 1) for line in words.read_text().splitlines()
                     if "\t" in line)
        names = [table.get(w, w).strip() for w in wnids]
    return image_dataset("tiny-imagenet", t["tx"], t["ty"], t["vx"], t["vy"],
                          num_classes=len(wnids), classes=names,
                          stats=((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)))


def _image_folder(name: str, base: Path, how: str | None) -> Dataset:
    """``base/train/<class>/*`` and ``base/test/<class>/*`` (jpg/png/…; classes = sorted train
    folder names) → uint8 [N, 3, IMAGE_SIZE, IMAGE_SIZE] (center crop + bilinear resize)."""
    train_dir, test_dir = base / "train", base / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise missing(name, [train_dir, test_dir], how)
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise missing(name, [train_dir / "<class>"], how)

    def split(folder: Path) -> tuple[np.ndarray, np.ndarray]:
        paths: list[Path] = []
        labels: list[int] = []
        for i, cls in enumerate(classes):
            sub = folder / cls
            files = sorted(p for p in sub.iterdir() if _is_image(p)) if sub.is_dir() else []
            paths += files
            labels += [i] * len(files)
        return _decode_images(paths, IMAGE_SIZE), np.asarray(labels, dtype=np.int64)

    tx, ty = split(train_dir)
    vx, vy = split(test_dir)
    return image_dataset(name, tx, ty, vx, vy, num_classes=len(classes), classes=classes)


@register_dataset("imagefolder", lambda root: [(root, [root / "train"])])
def load_imagefolder(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Any ImageFolder tree at ``data.root``: ``root/train/<class>/*`` and ``root/test/<class>/*``
    → uint8 [N, 3, 64, 64]; mean/std computed from train."""
    how = "set data.root to a folder holding train/<class>/*.jpg and test/<class>/*.jpg"
    return _image_folder("imagefolder", root, how)


@register_dataset("cats-vs-dogs", lambda root: [(root / "cats-vs-dogs",
                                                 [root / "cats-vs-dogs" / "train"])])
def load_cats_vs_dogs(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Cats vs dogs as an ImageFolder tree ``root/cats-vs-dogs/{train,test}/{cat,dog}/*.jpg``
    → uint8 [N, 3, 64, 64]."""
    how = ("get it from Kaggle (dogs-vs-cats) and sort the images into "
           "train/{cat,dog}/ and test/{cat,dog}/ there, or set data.root")
    return _image_folder("cats-vs-dogs", root / "cats-vs-dogs", how)
