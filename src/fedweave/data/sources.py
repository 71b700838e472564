"""Dataset sources: readers of the real on-disk formats and the built-in generators (DESIGN §6).

Every loader returns a :class:`Dataset` with images stored once as uint8 NCHW (features as
float32 ``[N, D]``) and labels as int64. Files are read from ``data.root`` (default
``$FEDWEAVE_DATA`` or ``~/.cache/fedweave``) in torchvision's layout; a missing dataset raises
:class:`DatasetMissingError` naming the expected path and how to get it. Users add datasets with
``@register_dataset("name")`` on a ``loader(cfg, root, seed) -> Dataset``.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import pickle
import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.download import DOWNLOADABLE, download_dataset
from fedweave.errors import DatasetMissingError, UserError
from fedweave.registry import Registry
from fedweave.rng import numpy_rng, torch_generator

FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SIZE = 64  # ImageFolder / cats-vs-dogs images are center-cropped and resized to this
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
EMNIST_SPLIT = "balanced"
EMNIST_BALANCED_CLASSES = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabdefghnqrt")
SYNTHETIC_MAX_SAMPLES = 2000  # cap of samples per synthetic device (before the test split)


@dataclass
class Dataset:
    """A dataset held in memory once: uint8 NCHW images (or float32 features), int64 labels."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    train_groups: torch.Tensor | None = None
    classes: list[str] | None = None


Array = np.ndarray | torch.Tensor
Loader = Callable[[DataConfig, Path, int], Dataset]
DATASETS: Registry[Loader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make ``data.dataset: <name>`` call this ``loader(cfg, root, seed)``."""
    return DATASETS.register(name)


def default_root() -> Path:
    """``$FEDWEAVE_DATA`` if set, else ``~/.cache/fedweave``."""
    env = os.environ.get("FEDWEAVE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fedweave"


def load_dataset(cfg: DataConfig, seed: int) -> Dataset:
    """Load ``cfg.dataset`` (a registered name, or ``hf:<hub name>``) from ``cfg.root`` (or
    :func:`default_root`), downloading it first when ``cfg.download`` is set and it is missing,
    then keep random ``train_samples`` /
    ``test_samples`` subsets (streams ``(seed, "subset", 0 / 1)``)."""
    root = (cfg.root or default_root()).expanduser()
    loader = _load_hf if cfg.dataset.startswith("hf:") else DATASETS.get(cfg.dataset)
    if cfg.download and cfg.dataset in DOWNLOADABLE and not dataset_status(cfg.dataset, root)[0]:
        download_dataset(cfg.dataset, root)
    ds = loader(cfg, root, seed)
    if cfg.train_samples is not None and cfg.train_samples < len(ds.train_y):
        keep = _subset(len(ds.train_y), cfg.train_samples, seed, 0)
        ds.train_x, ds.train_y = ds.train_x[keep], ds.train_y[keep]
        if ds.train_groups is not None:
            ds.train_groups = ds.train_groups[keep]
    if cfg.test_samples is not None and cfg.test_samples < len(ds.test_y):
        keep = _subset(len(ds.test_y), cfg.test_samples, seed, 1)
        ds.test_x, ds.test_y = ds.test_x[keep], ds.test_y[keep]
    return ds


def dataset_status(name: str, root: Path | None) -> tuple[bool, Path]:
    """Whether dataset ``name`` is on disk under ``root`` (default: :func:`default_root`) and
    where it is (or is expected). Built-in and user datasets count as present."""
    root = (root or default_root()).expanduser()
    if name.startswith("hf:"):
        return True, root / "hf"
    DATASETS.get(name)  # unknown names are a UserError listing the choices
    candidates = _locations(name, root)
    if not candidates:
        return True, root
    for where, markers in candidates:
        if any(m.exists() for m in markers):
            return True, where
    return False, candidates[0][0]


def to_float(x: torch.Tensor, mean: Sequence[float] | None, std: Sequence[float] | None
             ) -> torch.Tensor:
    """uint8 ``[..., C, H, W]`` → float32 ``(x/255 - mean) / std`` per channel (just ``x/255``
    without mean/std); float input is returned as float32 unchanged."""
    if x.dtype != torch.uint8:
        return x.float()
    out = x.float().div_(255.0)
    if mean is not None and std is not None:
        m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        out = out.sub_(m).div_(s)
    return out


# --------------------------------------------------------------------------------- helpers


def _subset(n: int, k: int, seed: int, which: int) -> torch.Tensor:
    perm = torch.randperm(n, generator=torch_generator(seed, "subset", which))
    return perm[:k].sort().values


def _channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of ``x/255`` for uint8 NCHW ``x``, in chunks (float64 sums)."""
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for chunk in x.split(4096):
        f = chunk.to(torch.float64).div_(255.0)
        total += f.sum(dim=(0, 2, 3))
        total_sq += f.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def _image_dataset(name: str, train_x: Array, train_y: Array, test_x: Array, test_y: Array, *,
                   num_classes: int | None = None,
                   stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None,
                   classes: list[str] | None = None,
                   train_groups: torch.Tensor | None = None) -> Dataset:
    """Wrap uint8 NCHW arrays; mean/std are the given standard values or computed from train."""
    tx, ty = torch.as_tensor(train_x), torch.as_tensor(train_y).long()
    vx, vy = torch.as_tensor(test_x), torch.as_tensor(test_y).long()
    if num_classes is None:
        num_classes = len(classes) if classes else int(max(ty.max(), vy.max())) + 1
    mean, std = stats if stats is not None else _channel_stats(tx)
    return Dataset(name, tx, ty, vx, vy, num_classes, mean, std, train_groups, classes)


def _missing(name: str, paths: Sequence[Path], how: str | None = None) -> DatasetMissingError:
    where = " or ".join(str(p) for p in paths)
    if how is None:
        how = f"run `fedweave data download {name}` or set data.root"
    return DatasetMissingError(f"dataset {name!r} not found: expected {where}; {how}")


def _locations(name: str, root: Path) -> list[tuple[Path, list[Path]]]:
    """Where each built-in on-disk dataset may live (first = where a download puts it), with
    the files any of which shows it is there."""

    def idx(folder: Path, base: str) -> tuple[Path, list[Path]]:
        return folder, [folder / base, folder / f"{base}.gz"]

    def one(folder: Path, marker: str) -> tuple[Path, list[Path]]:
        return folder, [folder / marker]

    emnist = f"emnist-{EMNIST_SPLIT}-train-images-idx3-ubyte"
    npz = root if root.suffix == ".npz" else root / "data.npz"
    table: dict[str, list[tuple[Path, list[Path]]]] = {
        "mnist": [idx(d, _IDX_FILES[0]) for d in _idx_dirs("mnist", root)],
        "fashion-mnist": [idx(d, _IDX_FILES[0]) for d in _idx_dirs("fashion-mnist", root)],
        "emnist": [idx(d, emnist) for d in (root / "EMNIST" / "raw", root / "EMNIST" / "gzip")],
        "femnist": [one(root / "femnist", "train")],
        "cifar10": [one(root / "cifar-10-batches-py", "data_batch_1")],
        "cifar100": [one(root / "cifar-100-python", "train")],
        "svhn": [one(root / "svhn", "train_32x32.mat"), one(root, "train_32x32.mat")],
        "tiny-imagenet": [one(root / "tiny-imagenet-200", "wnids.txt")],
        "cats-vs-dogs": [one(root / "cats-vs-dogs", "train")],
        "imagefolder": [one(root, "train")],
        "npz": [(npz, [npz])],
    }
    return table.get(name, [])


# ------------------------------------------------------------------------------- built-ins


def _digits_file() -> Path:
    """scikit-learn's bundled ``datasets/data/digits.csv.gz``, found without importing sklearn
    (its import alone costs ~1 s)."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise UserError("the digits dataset needs scikit-learn: pip install scikit-learn")
    return Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"


@register_dataset("digits")
def load_digits(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """scikit-learn's 1797 8×8 digits (``digits.csv.gz``: 64 pixel values 0..16 then the label
    per row; bundled, offline) → uint8 [N, 1, 8, 8] scaled to 0..255, with a fixed stratified
    20% test split (stream ``(0, "digits-split")``, independent of the seed)."""
    table = np.loadtxt(_digits_file(), delimiter=",")
    images = np.rint(table[:, :-1] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 1, 8, 8)
    target = table[:, -1].astype(np.int64)
    rng = numpy_rng(0, "digits-split")
    test_parts = []
    for label in range(10):
        members = rng.permutation(np.flatnonzero(target == label))
        test_parts.append(members[: round(0.2 * len(members))])
    is_test = np.zeros(len(target), dtype=bool)
    is_test[np.concatenate(test_parts)] = True
    return _image_dataset("digits", images[~is_test], target[~is_test], images[is_test],
                          target[is_test], num_classes=10, classes=[str(i) for i in range(10)])


@register_dataset("synthetic")
def load_synthetic(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """FedProx Synthetic(α, β) (Li et al. 2020, §5.1), one device per node: u_k ~ N(0, α²),
    W_k, b_k ~ N(u_k, 1); B_k ~ N(0, β²), v_k ~ N(B_k, 1); x ~ N(v_k, Σ) with Σ_jj = j^-1.2;
    y = argmax softmax(W_k x + b_k). ``iid``: one W, b ~ N(0, 1) and v = 0 for every device.
    Samples per device: int(lognormal(samples_mean, samples_sigma)) + min_samples, capped at
    ``SYNTHETIC_MAX_SAMPLES``; the last ``test_fraction`` of each device's samples is test."""
    sc = cfg.synthetic
    rng = numpy_rng(seed, "synthetic")
    k, dim, n_cls = cfg.nodes, sc.dim, sc.classes
    sizes = np.minimum(rng.lognormal(sc.samples_mean, sc.samples_sigma, k).astype(np.int64)
                       + sc.min_samples, SYNTHETIC_MAX_SAMPLES)
    u = rng.normal(0.0, sc.alpha, k)
    b_mean = rng.normal(0.0, sc.beta, k)
    sd = np.arange(1, dim + 1, dtype=np.float64) ** -0.6  # sqrt of Σ_jj = j^-1.2
    w_global = rng.normal(0.0, 1.0, (dim, n_cls))
    b_global = rng.normal(0.0, 1.0, n_cls)
    parts: dict[str, list[np.ndarray]] = {"tx": [], "ty": [], "tg": [], "vx": [], "vy": []}
    for node in range(k):
        if sc.iid:
            w, b, v = w_global, b_global, np.zeros(dim)
        else:
            w = rng.normal(u[node], 1.0, (dim, n_cls))
            b = rng.normal(u[node], 1.0, n_cls)
            v = rng.normal(b_mean[node], 1.0, dim)
        n = int(sizes[node])
        x = v + sd * rng.standard_normal((n, dim))
        y = np.argmax(x @ w + b, axis=1)  # argmax of softmax = argmax of the logits
        n_test = min(max(1, round(sc.test_fraction * n)), n - 1)
        parts["tx"].append(x[: n - n_test])
        parts["ty"].append(y[: n - n_test])
        parts["tg"].append(np.full(n - n_test, node))
        parts["vx"].append(x[n - n_test:])
        parts["vy"].append(y[n - n_test:])
    cat = {key: np.concatenate(val) for key, val in parts.items()}
    return Dataset(
        "synthetic",
        torch.from_numpy(cat["tx"].astype(np.float32)), torch.from_numpy(cat["ty"]).long(),
        torch.from_numpy(cat["vx"].astype(np.float32)), torch.from_numpy(cat["vy"]).long(),
        n_cls, None, None, torch.from_numpy(cat["tg"]).long(),
    )


# ------------------------------------------------------------------------- IDX (MNIST family)

_IDX_DTYPES: dict[int, str] = {
    0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


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
    raise _missing(name, [Path(d) / f"{bases[0]}[.gz]" for d in dirs], how)


def _mnist_like(name: str, cfg: DataConfig, root: Path, how: str | None,
                stats: tuple[tuple[float, ...], tuple[float, ...]], classes: list[str]
                ) -> Dataset:
    tx, ty, vx, vy = _load_idx_dataset(name, _idx_dirs(name, root), _IDX_FILES, how)
    return _image_dataset(name, tx[:, None], ty.astype(np.int64), vx[:, None],
                          vy.astype(np.int64), num_classes=10, stats=stats, classes=classes)


@register_dataset("mnist")
def load_mnist(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """MNIST IDX files (``.gz`` or not) in ``root/MNIST/raw`` (torchvision), ``root/mnist`` or
    ``root``: train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-… → uint8 [N, 1, 28, 28]."""
    return _mnist_like("mnist", cfg, root, None, ((0.1307,), (0.3081,)),
                       [str(i) for i in range(10)])


@register_dataset("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Fashion-MNIST IDX files in ``root/FashionMNIST/raw`` (torchvision), ``root/fashion-mnist``,
    ``root`` or Debian's ``/usr/share/datasets/fashion-mnist`` → uint8 [N, 1, 28, 28]."""
    how = ("run `fedweave data download fashion-mnist`, set data.root, "
           "or `apt-get install dataset-fashion-mnist`")
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
    return _mnist_like("fashion-mnist", cfg, root, how, ((0.2860,), (0.3530,)), classes)


@register_dataset("emnist")
def load_emnist(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """EMNIST 'balanced' (47 classes) IDX files ``emnist-balanced-{train,test}-{images-idx3,
    labels-idx1}-ubyte[.gz]`` in ``root/EMNIST/raw`` (torchvision) or ``root/EMNIST/gzip`` (the
    official zip, as our download leaves it); the stored images are transposed, so they are
    transposed back to upright uint8 [N, 1, 28, 28]."""
    bases = [f"emnist-{EMNIST_SPLIT}-{s}-{k}-ubyte" for s in ("train", "test")
             for k in ("images-idx3", "labels-idx1")]
    dirs = [root / "EMNIST" / "raw", root / "EMNIST" / "gzip"]
    tx, ty, vx, vy = _load_idx_dataset("emnist", dirs, bases, None)
    return _image_dataset("emnist", tx.transpose(0, 2, 1)[:, None].copy(), ty.astype(np.int64),
                          vx.transpose(0, 2, 1)[:, None].copy(), vy.astype(np.int64),
                          num_classes=len(EMNIST_BALANCED_CLASSES),
                          classes=EMNIST_BALANCED_CLASSES)


# ---------------------------------------------------------------------------- LEAF FEMNIST


def _cached(cache: Path, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Decoded tensors from ``cache`` (a torch.save file) or ``build()``, saved there when the
    folder is writable (written to a temporary name and renamed, so never half-written)."""
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    tensors = build()
    tmp = cache.with_name(cache.name + ".tmp")
    try:
        torch.save(tensors, tmp)
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)
    return tensors


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
        raise _missing("femnist", [folder / "*.json"], _FEMNIST_HOW)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(gs).astype(np.int64)


_FEMNIST_HOW = ("generate it with LEAF (github.com/TalwalkarLab/leaf, data/femnist/preprocess.sh)"
                " and copy data/train and data/test there, or set data.root")


@register_dataset("femnist")
def load_femnist(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """LEAF FEMNIST json: ``root/femnist/{train,test}/*.json``, each ``{"users", "num_samples",
    "user_data": {user: {"x": [[784 floats in 0..1]], "y": [label]}}}`` → uint8 [N, 1, 28, 28]
    (LEAF's convention kept: white background = 255), 62 classes, ``train_groups`` = writer
    index in order of first appearance (sorted files). Decoded once, cached in
    ``root/femnist/fedweave-cache.pt``."""
    base = root / "femnist"
    if not (base / "train").is_dir() or not (base / "test").is_dir():
        raise _missing("femnist", [base / "train", base / "test"], _FEMNIST_HOW)

    def build() -> dict[str, torch.Tensor]:
        writers: dict[str, int] = {}
        tx, ty, tg = _read_leaf(base / "train", writers)
        vx, vy, _ = _read_leaf(base / "test", writers)
        return {"tx": torch.from_numpy(tx), "ty": torch.from_numpy(ty),
                "tg": torch.from_numpy(tg), "vx": torch.from_numpy(vx),
                "vy": torch.from_numpy(vy)}

    t = _cached(base / "fedweave-cache.pt", build)
    classes = list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    return _image_dataset("femnist", t["tx"], t["ty"], t["vx"], t["vy"], num_classes=62,
                          classes=classes, train_groups=t["tg"])


# --------------------------------------------------------------------------------- CIFAR


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


@register_dataset("cifar10")
def load_cifar10(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """CIFAR-10 python pickles ``root/cifar-10-batches-py/data_batch_1..5`` and ``test_batch``
    (dicts with ``b'data'`` uint8 [N, 3072] CHW rows and ``b'labels'``; names from
    ``batches.meta``) → uint8 [N, 3, 32, 32]."""
    base = root / "cifar-10-batches-py"
    train = [base / f"data_batch_{i}" for i in range(1, 6)]
    if not all(p.is_file() for p in [*train, base / "test_batch"]):
        raise _missing("cifar10", [base])
    tx, ty = _cifar_batches(train, b"labels")
    vx, vy = _cifar_batches([base / "test_batch"], b"labels")
    return _image_dataset("cifar10", tx, ty, vx, vy, num_classes=10,
                          stats=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                          classes=_decode_names(base / "batches.meta", b"label_names"))


@register_dataset("cifar100")
def load_cifar100(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """CIFAR-100 python pickles ``root/cifar-100-python/{train,test}`` (``b'data'``,
    ``b'fine_labels'``; names from ``meta``) → uint8 [N, 3, 32, 32], 100 fine classes."""
    base = root / "cifar-100-python"
    if not ((base / "train").is_file() and (base / "test").is_file()):
        raise _missing("cifar100", [base])
    tx, ty = _cifar_batches([base / "train"], b"fine_labels")
    vx, vy = _cifar_batches([base / "test"], b"fine_labels")
    return _image_dataset("cifar100", tx, ty, vx, vy, num_classes=100,
                          stats=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
                          classes=_decode_names(base / "meta", b"fine_label_names"))


# ---------------------------------------------------------------------------------- SVHN


@register_dataset("svhn")
def load_svhn(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """SVHN cropped digits ``train_32x32.mat`` / ``test_32x32.mat`` in ``root/svhn`` or ``root``
    (MATLAB: ``X`` uint8 [32, 32, 3, N], ``y`` [N, 1] with 10 meaning digit 0) →
    uint8 [N, 3, 32, 32]."""
    from scipy.io import loadmat

    for base in (root / "svhn", root):
        if (base / "train_32x32.mat").is_file() and (base / "test_32x32.mat").is_file():
            break
    else:
        raise _missing("svhn", [root / "svhn" / "train_32x32.mat", root / "train_32x32.mat"])

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        mat = loadmat(path)
        x = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 2, 0, 1))
        y = np.asarray(mat["y"], dtype=np.int64).reshape(-1) % 10
        return x, y

    tx, ty = read(base / "train_32x32.mat")
    vx, vy = read(base / "test_32x32.mat")
    return _image_dataset("svhn", tx, ty, vx, vy, num_classes=10,
                          stats=((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
                          classes=[str(i) for i in range(10)])


# ------------------------------------------------------------------- image folders (PIL)


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


@register_dataset("tiny-imagenet")
def load_tiny_imagenet(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Tiny-ImageNet-200 ``root/tiny-imagenet-200``: ``wnids.txt`` (class ids, sorted for the
    label order), optional ``words.txt`` (names), ``train/<wnid>/images/*.JPEG`` and the labelled
    ``val/images`` + ``val/val_annotations.txt`` (tab-separated ``file wnid x y w h``) used as
    the test set → uint8 [N, 3, 64, 64]. Decoded once, cached in ``fedweave-cache.pt``."""
    base = root / "tiny-imagenet-200"
    if not (base / "wnids.txt").is_file() or not (base / "val" / "val_annotations.txt").is_file():
        raise _missing("tiny-imagenet", [base])
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

    t = _cached(base / "fedweave-cache.pt", build)
    names = wnids
    words = base / "words.txt"
    if words.is_file():
        table = dict(line.split("\t", 1) for line in words.read_text().splitlines()
                     if "\t" in line)
        names = [table.get(w, w).strip() for w in wnids]
    return _image_dataset("tiny-imagenet", t["tx"], t["ty"], t["vx"], t["vy"],
                          num_classes=len(wnids), classes=names,
                          stats=((0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)))


def _image_folder(name: str, base: Path, how: str | None) -> Dataset:
    """``base/train/<class>/*`` and ``base/test/<class>/*`` (jpg/png/…; classes = sorted train
    folder names) → uint8 [N, 3, IMAGE_SIZE, IMAGE_SIZE] (center crop + bilinear resize)."""
    train_dir, test_dir = base / "train", base / "test"
    if not train_dir.is_dir() or not test_dir.is_dir():
        raise _missing(name, [train_dir, test_dir], how)
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if not classes:
        raise _missing(name, [train_dir / "<class>"], how)

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
    return _image_dataset(name, tx, ty, vx, vy, num_classes=len(classes), classes=classes)


@register_dataset("imagefolder")
def load_imagefolder(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Any ImageFolder tree at ``data.root``: ``root/train/<class>/*`` and ``root/test/<class>/*``
    → uint8 [N, 3, 64, 64]; mean/std computed from train."""
    how = "set data.root to a folder holding train/<class>/*.jpg and test/<class>/*.jpg"
    return _image_folder("imagefolder", root, how)


@register_dataset("cats-vs-dogs")
def load_cats_vs_dogs(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """Cats vs dogs as an ImageFolder tree ``root/cats-vs-dogs/{train,test}/{cat,dog}/*.jpg``
    → uint8 [N, 3, 64, 64]."""
    how = ("get it from Kaggle (dogs-vs-cats) and sort the images into "
           "train/{cat,dog}/ and test/{cat,dog}/ there, or set data.root")
    return _image_folder("cats-vs-dogs", root / "cats-vs-dogs", how)


# ----------------------------------------------------------------------------------- npz


def _npz_images(x: np.ndarray) -> np.ndarray:
    """NHWC → NCHW when the last axis looks like channels (1, 3 or 4) and axis 1 does not;
    [N, H, W] gets a channel axis."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


@register_dataset("npz")
def load_npz(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """A numpy ``.npz`` at ``data.root`` (or ``data.root/data.npz``) with ``x_train, y_train,
    x_test, y_test``: uint8 images ([N, H, W], NHWC or NCHW) are kept as uint8 NCHW with
    mean/std from train; anything else is float32 features ``[N, D]`` (flattened)."""
    path = root if root.suffix == ".npz" else root / "data.npz"
    if not path.is_file():
        raise _missing("npz", [path], "set data.root to a .npz file with x_train, y_train, "
                                      "x_test, y_test")
    with np.load(path) as blob:
        missing = {"x_train", "y_train", "x_test", "y_test"} - set(blob.files)
        if missing:
            raise UserError(f"{path} lacks arrays {sorted(missing)}")
        tx, ty, vx, vy = (blob[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    ty, vy = ty.astype(np.int64).reshape(-1), vy.astype(np.int64).reshape(-1)
    if tx.dtype == np.uint8 and tx.ndim in (3, 4):
        return _image_dataset("npz", _npz_images(tx), ty, _npz_images(vx), vy)
    n_cls = int(max(ty.max(), vy.max())) + 1
    return Dataset("npz", torch.from_numpy(tx.reshape(len(tx), -1).astype(np.float32)),
                   torch.from_numpy(ty), torch.from_numpy(vx.reshape(len(vx), -1)
                                                          .astype(np.float32)),
                   torch.from_numpy(vy), n_cls, None, None)


# ------------------------------------------------------------------- Hugging Face (optional)


def _load_hf(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """``hf:<name>``: a Hugging Face Hub dataset via the optional ``datasets`` package (cached in
    ``root/hf``), splits ``train`` and ``test`` (else ``validation``). The first ``Image`` column
    becomes uint8 NCHW (mean/std from train), else numeric columns other than the label become
    float32 features; the label is ``label`` / ``labels`` / ``fine_label`` (class names kept)."""
    try:
        import datasets as hf
    except ImportError as e:
        raise UserError("hf:<name> datasets need the `datasets` package: "
                        "pip install 'fedweave[hf]'") from e
    name = cfg.dataset[len("hf:"):]
    try:
        splits = hf.load_dataset(name, cache_dir=str(root / "hf"))
    except Exception as e:  # the hub client raises many types; all mean "not available"
        raise DatasetMissingError(f"Hugging Face dataset {name!r} could not be loaded into "
                                  f"{root / 'hf'}: {e}") from e
    test_split = "test" if "test" in splits else "validation"
    if "train" not in splits or test_split not in splits:
        raise UserError(f"Hugging Face dataset {name!r} needs train and test/validation splits")
    features = splits["train"].features
    label = next((k for k in ("label", "labels", "fine_label") if k in features), None)
    if label is None:
        raise UserError(f"Hugging Face dataset {name!r} has no label/labels/fine_label column")
    image = next((k for k, f in features.items() if isinstance(f, hf.Image)), None)
    names = getattr(features[label], "names", None)

    def images(split: str) -> np.ndarray:
        pics = splits[split][image]
        mode = "L" if pics[0].mode in ("1", "L") else "RGB"
        arr = np.stack([np.asarray(p.convert(mode), dtype=np.uint8) for p in pics])
        return arr[:, None] if arr.ndim == 3 else np.ascontiguousarray(arr.transpose(0, 3, 1, 2))

    def table(split: str) -> np.ndarray:
        cols = [k for k in features if k != label]
        return np.stack([np.asarray(splits[split][k], dtype=np.float32) for k in cols], axis=1)

    ty = np.asarray(splits["train"][label], dtype=np.int64)
    vy = np.asarray(splits[test_split][label], dtype=np.int64)
    n_cls = len(names) if names else int(max(ty.max(), vy.max())) + 1
    if image is not None:
        return _image_dataset(cfg.dataset, images("train"), ty, images(test_split), vy,
                              num_classes=n_cls, classes=names)
    return Dataset(cfg.dataset, torch.from_numpy(table("train")), torch.from_numpy(ty),
                   torch.from_numpy(table(test_split)), torch.from_numpy(vy), n_cls, None, None,
                   classes=names)
