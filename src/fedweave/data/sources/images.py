"""Image-file readers (PIL): Tiny-ImageNet-200, cats-vs-dogs and any ImageFolder tree.

Only JPEG, PNG, BMP, GIF and WebP are decoded (PIL is told so, so a file of another format,
e.g. EPS, which PIL would hand to Ghostscript, is refused whatever its name), images above
:data:`MAX_IMAGE_PIXELS` are refused before they are decoded, and a truncated or garbled file
is a :class:`UserError` naming it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

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
from fedweave.data.sources.cache import decoded_cache
from fedweave.errors import UserError

IMAGE_SIZE = 64  # ImageFolder / cats-vs-dogs images are center-cropped and resized to this
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")  # "JPEG" also opens multi-picture (MPO)
MAX_IMAGE_PIXELS = 1 << 26  # 67 M pixels (8192²): below PIL's own bomb warning (~89 M)
_TINY_FIX = redownload("tiny-imagenet")


def decode_image(path: Path, size: int | None, fix: str) -> np.ndarray:
    """One image file → RGB uint8 [3, H, W]. Accepts JPEG/PNG/BMP/GIF/WebP (first frame) of
    at most :data:`MAX_IMAGE_PIXELS` pixels; with ``size``, the image is center-cropped to a
    square and resized (bilinear) to ``size``. Anything else is a :class:`UserError` naming
    the file and ``fix``."""
    from PIL import Image

    try:
        with Image.open(path, formats=IMAGE_FORMATS) as img:
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise unreadable(path, f"{img.width}×{img.height} pixels, more than the "
                                       f"{MAX_IMAGE_PIXELS} allowed (decompression bomb?)", fix)
            rgb = img.convert("RGB")
        if size is not None and rgb.size != (size, size):
            w, h = rgb.size
            side = min(w, h)
            left, top = (w - side) // 2, (h - side) // 2
            rgb = rgb.crop((left, top, left + side, top + side)).resize(
                (size, size), Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    except UserError:
        raise
    except Exception as e:  # PIL's decoders raise many types on truncated or garbled files
        raise unreadable(path, f"not a readable {'/'.join(IMAGE_FORMATS)} image "
                               f"({reason(e)})", fix) from None


def _decode_images(paths: Sequence[Path], size: int | None, fix: str) -> np.ndarray:
    """RGB uint8 [N, 3, S, S] from image files (PIL, threaded), see :func:`decode_image`;
    without ``size`` all must share one size."""
    if not paths:
        return np.zeros((0, 3, size or 0, size or 0), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        images = list(pool.map(lambda p: decode_image(p, size, fix), paths))
    if size is None and len({im.shape for im in images}) > 1:
        raise UserError(f"images of different sizes in {paths[0].parent}; {fix}")
    return np.stack(images)


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise unreadable(path, f"not a readable text file ({reason(e)})", _TINY_FIX) from None


def _tiny_files(base: Path, wnids: list[str]
                ) -> tuple[list[Path], list[int], list[Path], list[int]]:
    """Tiny-ImageNet's train images and labels (per class folder, sorted) and the val images
    and labels named by ``val/val_annotations.txt``."""
    index = {w: i for i, w in enumerate(wnids)}
    train_paths: list[Path] = []
    train_labels: list[int] = []
    for wnid in wnids:
        folder = base / "train" / wnid / "images"
        if not folder.is_dir():
            raise missing("tiny-imagenet", [folder])
        files = sorted(p for p in folder.iterdir() if _is_image(p))
        train_paths += files
        train_labels += [index[wnid]] * len(files)
    val_paths: list[Path] = []
    val_labels: list[int] = []
    notes = base / "val" / "val_annotations.txt"
    for number, line in enumerate(_read_text(notes).splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2:
            continue
        name, wnid = fields[0], fields[1]
        if wnid not in index:
            raise unreadable(notes, f"line {number} names class {wnid!r}, which is not in "
                                    "wnids.txt", _TINY_FIX)
        if Path(name).name != name or name in ("", ".", ".."):
            raise unreadable(notes, f"line {number} names {name!r}, not a file name in "
                                    "val/images", _TINY_FIX)
        path = base / "val" / "images" / name
        if not path.is_file():
            raise unreadable(notes, f"line {number} names {name!r}, which is not in "
                                    f"{path.parent}", _TINY_FIX)
        val_paths.append(path)
        val_labels.append(index[wnid])
    return train_paths, train_labels, val_paths, val_labels


@register_dataset("tiny-imagenet", lambda root: [(root / "tiny-imagenet-200",
                                                  [root / "tiny-imagenet-200" / "wnids.txt"])])
def load_tiny_imagenet(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Tiny-ImageNet-200 ``root/tiny-imagenet-200``: ``wnids.txt`` (class ids, sorted for the
    label order), optional ``words.txt`` (names), ``train/<wnid>/images/*.JPEG`` and the labelled
    ``val/images`` + ``val/val_annotations.txt`` (tab-separated ``file wnid x y w h``) used as
    the test set → uint8 [N, 3, 64, 64]. Decoded once, cached in
    ``tiny-imagenet-200/fedweave-cache/`` (rebuilt when any of those files changes)."""
    base = root / "tiny-imagenet-200"
    if not (base / "wnids.txt").is_file() or not (base / "val" / "val_annotations.txt").is_file():
        raise missing("tiny-imagenet", [base])
    wnids = sorted(w.strip() for w in _read_text(base / "wnids.txt").split() if w.strip())
    train_paths, train_labels, val_paths, val_labels = _tiny_files(base, wnids)

    def build() -> dict[str, np.ndarray]:
        return {"tx": _decode_images(train_paths, 64, _TINY_FIX),
                "ty": np.asarray(train_labels, dtype=np.int64),
                "vx": _decode_images(val_paths, 64, _TINY_FIX),
                "vy": np.asarray(val_labels, dtype=np.int64)}

    sources = [base / "wnids.txt", base / "val" / "val_annotations.txt", *train_paths,
               *val_paths]
    t = {k: torch.from_numpy(v) for k, v in
         decoded_cache("tiny-imagenet", sources, build, names=("tx", "ty", "vx", "vy"),
                       near=base, root=root).items()}
    names = wnids
    words = base / "words.txt"
    if words.is_file():
        table = dict(line.split("\t", 1) for line in _read_text(words).splitlines()
                     if "\t" in line)
        names = [table.get(w, w).strip() for w in wnids]
    return image_dataset("tiny-imagenet", t["tx"], t["ty"], t["vx"], t["vy"],
                         num_classes=len(wnids), classes=names,
                         stats=((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)))


def _image_folder(name: str, base: Path, how: str | None, fix: str) -> Dataset:
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
        return _decode_images(paths, IMAGE_SIZE, fix), np.asarray(labels, dtype=np.int64)

    tx, ty = split(train_dir)
    vx, vy = split(test_dir)
    return image_dataset(name, tx, ty, vx, vy, num_classes=len(classes), classes=classes)


@register_dataset("imagefolder", lambda root: [(root, [root / "train"])])
def load_imagefolder(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Any ImageFolder tree at ``data.root``: ``root/train/<class>/*`` and ``root/test/<class>/*``
    → uint8 [N, 3, 64, 64]; mean/std computed from train."""
    how = "set data.root to a folder holding train/<class>/*.jpg and test/<class>/*.jpg"
    return _image_folder("imagefolder", root, how, "replace or remove that file")


@register_dataset("cats-vs-dogs", lambda root: [(root / "cats-vs-dogs",
                                                 [root / "cats-vs-dogs" / "train"])])
def load_cats_vs_dogs(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Cats vs dogs as an ImageFolder tree ``root/cats-vs-dogs/{train,test}/{cat,dog}/*.jpg``
    → uint8 [N, 3, 64, 64]."""
    how = ("get it from Kaggle (dogs-vs-cats) and sort the images into "
           "train/{cat,dog}/ and test/{cat,dog}/ there, or set data.root")
    return _image_folder("cats-vs-dogs", root / "cats-vs-dogs", how,
                         "replace or remove that file")
