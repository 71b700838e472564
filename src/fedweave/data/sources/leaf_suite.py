"""LEAF Shakespeare and CelebA from the json files LEAF's preprocessing writes.

Both use LEAF's layout (Caldas et al. 2018, "LEAF: A Benchmark for Federated Settings",
github.com/TalwalkarLab/leaf): ``root/<name>/{train,test}/*.json``, each file
``{"users": [names], "num_samples": [...], "user_data": {name: {"x": [...], "y": [...]}}}``
(``num_samples`` is not trusted; the rows are counted). A user is a natural group
(``train_groups`` / ``test_groups``: user index in order of first appearance over the sorted
train files, then the test files), so ``data.partition: natural`` keeps LEAF's users as clients.

* **shakespeare**: ``x`` = strings of the context length (LEAF: 80 characters), ``y`` = the
  next character. Characters are indices into LEAF's 80-character vocabulary
  :data:`ALL_LETTERS` (``models/utils/language_utils.py``); the inputs are stored as int8
  ``[N, L]`` token ids (they reach the model as exact float values, which the sequence models
  turn back into ids), labels int64 in 0..79.
* **celeba**: ``x`` = image file names in ``root/celeba/raw/img_align_celeba/``, ``y`` = the
  attribute label LEAF writes (Smiling: 0 / 1). Images are resized (bilinear, no crop) to
  84×84 RGB as LEAF's ``models/celeba/cnn.py`` does; uint8 [N, 3, 84, 84].

Reading executes nothing: json through :func:`json.loads`, images through PIL restricted to
JPEG/PNG/BMP/GIF/WebP (:func:`fedweave.data.sources.images.decode_image`); file names must be
plain names inside the image folder. Decoded arrays are cached like FEMNIST's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.sources.base import (
    Dataset,
    channel_stats,
    missing,
    reason,
    register_dataset,
    unreadable,
)
from fedweave.data.sources.cache import decoded_cache
from fedweave.data.sources.images import decode_image

#: LEAF's character vocabulary (models/utils/language_utils.py ALL_LETTERS), index = token id.
ALL_LETTERS = ("\n !\"&'(),-.0123456789:;>?ABCDEFGHIJKLMNOPQRSTUVWXYZ[]abcdefghijklmnopqrstuvwxyz}")
CELEBA_SIZE = 84  # LEAF's celeba IMAGE_SIZE
_LEAF = "LEAF (github.com/TalwalkarLab/leaf, data/{name}/preprocess.sh)"
_LOOKUP = np.full(256, -1, dtype=np.int16)
_LOOKUP[np.frombuffer(ALL_LETTERS.encode("ascii"), dtype=np.uint8)] = np.arange(len(ALL_LETTERS))

User = tuple[str, list[Any], list[Any]]


def _how(name: str) -> str:
    extra = (" and the images to celeba/raw/img_align_celeba/" if name == "celeba" else "")
    return (f"`fedweave data download {name}` fetches LEAF's raw sources and says how to "
            f"generate it with {_LEAF.format(name=name)}; copy data/train and data/test to "
            f"{name}/train and {name}/test{extra}, or set data.root")


def _fix(name: str) -> str:
    return f"regenerate it with {_LEAF.format(name=name)}"


def read_leaf_json(path: Path, fix: str) -> list[User]:
    """``(user, x rows, y values)`` of one LEAF json file, in the order of ``users``; bad json
    or a missing ``users`` / ``user_data`` / ``x`` / ``y``, or x and y of different lengths,
    are a :class:`UserError` naming the file."""
    try:
        blob = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise unreadable(path, f"not a readable LEAF json file ({reason(e)})", fix) from None
    users = blob.get("users") if isinstance(blob, dict) else None
    user_data = blob.get("user_data") if isinstance(blob, dict) else None
    if not isinstance(users, list) or not isinstance(user_data, dict):
        raise unreadable(path, 'expected an object with "users" (a list) and "user_data" '
                               "(an object)", fix)
    out: list[User] = []
    for user in users:
        data = user_data.get(user) if isinstance(user, str) else None
        if not isinstance(data, dict) or not isinstance(data.get("x"), list) \
                or not isinstance(data.get("y"), list):
            raise unreadable(path, f'user {user!r} has no "x" and "y" lists in "user_data"', fix)
        if len(data["x"]) != len(data["y"]):
            raise unreadable(path, f"user {user!r}: {len(data['x'])} x rows but "
                                   f"{len(data['y'])} y values", fix)
        out.append((user, data["x"], data["y"]))
    return out


def encode_text(texts: list[Any], path: Path, user: str, fix: str) -> np.ndarray:
    """Strings of one length → int8 token ids [n, L] in :data:`ALL_LETTERS`; other values,
    unequal lengths or a character outside the vocabulary are a :class:`UserError`."""
    if not all(isinstance(t, str) for t in texts):
        raise unreadable(path, f"user {user!r}: x and y must be strings", fix)
    lengths = {len(t) for t in texts}
    if len(lengths) > 1 or 0 in lengths:
        raise unreadable(path, f"user {user!r}: strings must share one non-zero length "
                               f"(found {sorted(lengths)[:5]})", fix)
    try:
        raw = "".join(texts).encode("ascii")
    except UnicodeEncodeError as e:
        raise unreadable(path, f"user {user!r}: character {e.object[e.start]!r} is not in "
                               "LEAF's 80-character vocabulary", fix) from None
    ids = _LOOKUP[np.frombuffer(raw, dtype=np.uint8)]
    if (ids < 0).any():
        bad = chr(raw[int(np.flatnonzero(ids < 0)[0])])
        raise unreadable(path, f"user {user!r}: character {bad!r} is not in LEAF's "
                               "80-character vocabulary", fix)
    return ids.astype(np.int8).reshape(len(texts), -1)


def _folder_files(base: Path, name: str) -> tuple[list[Path], list[Path]]:
    if not (base / "train").is_dir() or not (base / "test").is_dir():
        raise missing(name, [base / "train", base / "test"], _how(name))
    train, test = sorted((base / "train").glob("*.json")), sorted((base / "test").glob("*.json"))
    if not train:
        raise missing(name, [base / "train" / "*.json"], _how(name))
    return train, test


Convert = Callable[[Path, str, list[Any], list[Any]], tuple[np.ndarray, np.ndarray]]


def _read_split(files: list[Path], users: dict[str, int], convert: Convert, fix: str,
                empty: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xs, ys, gs = [], [], []
    for path in files:
        for user, x, y in read_leaf_json(path, fix):
            if not x:
                continue
            cx, cy = convert(path, user, x, y)
            xs.append(cx)
            ys.append(cy)
            gs.append(np.full(len(cy), users.setdefault(user, len(users)), dtype=np.int64))
    if not xs:
        return empty, np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len({x.shape[1:] for x in xs}) > 1:
        raise unreadable(files[0].parent, "users' x rows differ in length "
                         f"({sorted({x.shape[1:] for x in xs})[:3]})", fix)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs)


def _load_leaf(name: str, root: Path, convert: Convert, empty: np.ndarray,
               params: dict[str, Any], extra_sources: Callable[[], list[Path]] | None = None
               ) -> dict[str, torch.Tensor]:
    base = root / name
    train, test = _folder_files(base, name)
    fix = _fix(name)

    def build() -> dict[str, np.ndarray]:
        users: dict[str, int] = {}
        tx, ty, tg = _read_split(train, users, convert, fix, empty)
        if len(ty) == 0:
            raise missing(name, [base / "train" / "*.json"], "no user has a sample; " + _how(name))
        vx, vy, vg = _read_split(test, users, convert, fix, empty)
        return {"tx": tx, "ty": ty, "tg": tg, "vx": vx, "vy": vy, "vg": vg}

    arrays = decoded_cache(name, [*train, *test], build,
                           names=("tx", "ty", "tg", "vx", "vy", "vg"), near=base, root=root,
                           params=params)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}


def _shakespeare_rows(path: Path, user: str, x: list[Any], y: list[Any]
                      ) -> tuple[np.ndarray, np.ndarray]:
    fix = _fix("shakespeare")
    tokens = encode_text(x, path, user, fix)
    targets = encode_text(y, path, user, fix)
    if targets.shape[1] != 1:
        raise unreadable(path, f"user {user!r}: y must be single characters", fix)
    return tokens, targets[:, 0].astype(np.int64)


@register_dataset("shakespeare", lambda root: [(root / "shakespeare",
                                                [root / "shakespeare" / "train"])])
def load_shakespeare(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """LEAF Shakespeare (next character of a speaking role's lines): int8 token ids
    ``[N, L]`` (L = 80 in LEAF), 80 classes, one group per role (see the module docstring)."""
    t = _load_leaf("shakespeare", root, _shakespeare_rows, np.zeros((0, 0), np.int8), {})
    if t["vx"].numel() == 0:
        t["vx"] = t["vx"].reshape(0, t["tx"].shape[1])
    elif t["vx"].shape[1] != t["tx"].shape[1]:
        raise unreadable(root / "shakespeare" / "test", "test strings are "
                         f"{t['vx'].shape[1]} characters, train strings {t['tx'].shape[1]}",
                         _fix("shakespeare"))
    return Dataset("shakespeare", t["tx"], t["ty"], t["vx"], t["vy"], len(ALL_LETTERS),
                   None, None, t["tg"], list(ALL_LETTERS), test_groups=t["vg"])


def _image_name(path: Path, user: str, name: Any, fix: str) -> str:
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", "..") \
            or "\\" in name:
        raise unreadable(path, f"user {user!r}: x must hold plain image file names "
                               f"(found {str(name)[:60]!r})", fix)
    return name


def _celeba_rows(root: Path) -> Convert:
    images = root / "celeba" / "raw" / "img_align_celeba"
    fix = _fix("celeba")

    def convert(path: Path, user: str, x: list[Any], y: list[Any]
                ) -> tuple[np.ndarray, np.ndarray]:
        if not images.is_dir():
            raise missing("celeba", [images], _how("celeba"))
        names = [_image_name(path, user, n, fix) for n in x]
        labels = np.asarray([int(v) if isinstance(v, (int, bool)) else -1 for v in y])
        if ((labels != 0) & (labels != 1)).any():
            raise unreadable(path, f"user {user!r}: y must be labels 0 or 1", fix)
        pixels = np.stack([_decode_celeba(images / n, fix) for n in names])
        return pixels, labels.astype(np.int64)

    return convert


def _decode_celeba(path: Path, fix: str) -> np.ndarray:
    """One CelebA image → uint8 [3, 84, 84], resized without cropping (LEAF's
    ``img.resize((84, 84)).convert('RGB')``)."""
    from PIL import Image

    if not path.is_file():
        raise unreadable(path, "image file named in the LEAF json is missing", fix)
    rgb = decode_image(path, None, fix)
    if rgb.shape[1:] == (CELEBA_SIZE, CELEBA_SIZE):
        return rgb
    img = Image.fromarray(rgb.transpose(1, 2, 0)).resize((CELEBA_SIZE, CELEBA_SIZE),
                                                         Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


@register_dataset("celeba", lambda root: [(root / "celeba", [root / "celeba" / "train"])])
def load_celeba(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """LEAF CelebA (smiling or not, one group per celebrity): uint8 [N, 3, 84, 84] RGB,
    2 classes; per-channel statistics from the training images (see the module docstring)."""
    empty = np.zeros((0, 3, CELEBA_SIZE, CELEBA_SIZE), np.uint8)
    t = _load_leaf("celeba", root, _celeba_rows(root), empty, {"size": CELEBA_SIZE})
    mean, std = channel_stats(t["tx"])
    return Dataset("celeba", t["tx"], t["ty"], t["vx"], t["vy"], 2, mean, std, t["tg"],
                   ["not smiling", "smiling"], test_groups=t["vg"])
