"""The dataset registry and what every reader shares: the :class:`Dataset` record, the data
root, ``load_dataset`` / ``dataset_status``, subsets, per-channel statistics and the error
messages for missing or unreadable files.

The format modules (``idx``, ``cifar``, ...) register their loaders here with
``@register_dataset(name, locations=...)``; this module imports none of them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.errors import DatasetMissingError, UserError
from fedweave.registry import Registry
from fedweave.rng import numpy_rng, torch_generator


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
    test_groups: torch.Tensor | None = None


Array = np.ndarray | torch.Tensor
Loader = Callable[[DataConfig, Path, int], Dataset]
Stats = tuple[tuple[float, ...], tuple[float, ...]]
# (folder, files any of which shows the dataset is there); the first folder is where a
# download puts it.
Locations = Callable[[Path], list[tuple[Path, list[Path]]]]

#: built-in dataset name -> the module that registers it (imported on first use)
BUILTIN_DATASETS = {
    **{name: f"fedweave.data.sources.{module}" for name, module in (
        ("digits", "builtin"), ("synthetic", "builtin"), ("mnist", "idx"),
        ("fashion-mnist", "idx"), ("emnist", "idx"), ("cifar10", "cifar"),
        ("cifar100", "cifar"), ("svhn", "svhn"), ("femnist", "leaf"), ("shakespeare", "leaf_suite"),
        ("celeba", "leaf_suite"), ("npz", "arrays"),
        ("tiny-imagenet", "images"), ("imagefolder", "images"), ("cats-vs-dogs", "images"))},
}
DATASETS: Registry[Loader] = Registry("dataset", BUILTIN_DATASETS)
#: built-in ``<prefix><name>`` datasets -> the module that registers the prefix
BUILTIN_PREFIXES = {"hf:": "fedweave.data.sources.hf"}
_LOCATIONS: dict[str, Locations] = {}
# ``<prefix><name>`` datasets (``hf:<hub name>``): loader and the folder under root they use.
_PREFIX_LOADERS: dict[str, tuple[Loader, str]] = {}


def register_dataset(name: str, locations: Locations | None = None
                     ) -> Callable[[Loader], Loader]:
    """Decorator: make ``data.dataset: <name>`` call this ``loader(cfg, root, seed)``.
    ``locations(root)`` (optional) tells :func:`dataset_status` where the files may live."""
    if locations is not None:
        _LOCATIONS[name] = locations
    return DATASETS.register(name)


def register_prefix(prefix: str, folder: str) -> Callable[[Loader], Loader]:
    """Decorator: datasets named ``<prefix><anything>`` go to this loader (their files live in
    ``root/<folder>``)."""

    def add(loader: Loader) -> Loader:
        _PREFIX_LOADERS[prefix] = (loader, folder)
        return loader

    return add


def _prefix_loader(name: str) -> tuple[Loader, str] | None:
    for prefix, module in BUILTIN_PREFIXES.items():
        if name.startswith(prefix) and prefix not in _PREFIX_LOADERS:
            import_module(module)
    return next((v for p, v in _PREFIX_LOADERS.items() if name.startswith(p)), None)


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
    prefixed = _prefix_loader(cfg.dataset)
    loader = prefixed[0] if prefixed is not None else DATASETS.get(cfg.dataset)
    if cfg.download:
        from fedweave.data.download import DOWNLOADABLE, download_dataset

        if cfg.dataset in DOWNLOADABLE and not dataset_status(cfg.dataset, root)[0]:
            download_dataset(cfg.dataset, root)
    ds = loader(cfg, root, seed)
    if cfg.user_fraction < 1 or cfg.user_min_samples > 0:
        sample_users(ds, cfg.user_fraction, cfg.user_min_samples, seed)
    if cfg.train_samples is not None and cfg.train_samples < len(ds.train_y):
        keep = subset(len(ds.train_y), cfg.train_samples, seed, 0)
        ds.train_x, ds.train_y = ds.train_x[keep], ds.train_y[keep]
        if ds.train_groups is not None:
            ds.train_groups = ds.train_groups[keep]
    if cfg.test_samples is not None and cfg.test_samples < len(ds.test_y):
        keep = subset(len(ds.test_y), cfg.test_samples, seed, 1)
        ds.test_x, ds.test_y = ds.test_x[keep], ds.test_y[keep]
        if ds.test_groups is not None:
            ds.test_groups = ds.test_groups[keep]
    return ds


def sample_users(ds: Dataset, fraction: float, min_samples: int, seed: int) -> None:
    """LEAF's user sampling (``paper_experiments`` / ``utils/sample.py --sf`` in niid mode,
    then ``remove_users.py -k``) on a dataset with natural groups, in place: users are taken
    in an order drawn from ``numpy_rng(seed, "leaf-users")`` until they hold at least
    ⌊fraction · training samples⌋ samples, then users with fewer than ``min_samples``
    training samples are dropped; both splits keep only the remaining users' samples (the
    test split when the dataset records its groups). Group ids keep their values."""
    if ds.train_groups is None:
        raise UserError(f"data.user_fraction / data.user_min_samples need a dataset with users "
                        f"(natural groups: femnist, shakespeare, celeba, synthetic); "
                        f"{ds.name!r} has none")
    groups = ds.train_groups.cpu().numpy()
    ids, counts = np.unique(groups, return_counts=True)
    target = int(fraction * len(groups))
    order = numpy_rng(seed, "leaf-users").permutation(len(ids))
    taken = np.cumsum(counts[order])
    chosen = order[: int(np.searchsorted(taken, target)) + 1] if fraction < 1 else order
    chosen = chosen[counts[chosen] >= min_samples]
    if len(chosen) == 0:
        raise UserError(f"data.user_min_samples={min_samples} leaves no user of {ds.name!r} "
                        f"(the largest has {int(counts.max())} training samples): lower it")
    keep = torch.from_numpy(np.sort(ids[chosen]))
    train = torch.isin(ds.train_groups, keep)
    ds.train_x, ds.train_y, ds.train_groups = (ds.train_x[train], ds.train_y[train],
                                               ds.train_groups[train])
    if ds.test_groups is not None:
        test = torch.isin(ds.test_groups, keep)
        ds.test_x, ds.test_y, ds.test_groups = (ds.test_x[test], ds.test_y[test],
                                                ds.test_groups[test])


def dataset_status(name: str, root: Path | None) -> tuple[bool, Path]:
    """Whether dataset ``name`` is on disk under ``root`` (default: :func:`default_root`) and
    where it is (or is expected). Built-in and user datasets count as present."""
    root = (root or default_root()).expanduser()
    prefixed = _prefix_loader(name)
    if prefixed is not None:
        return True, root / prefixed[1]
    DATASETS.get(name)  # unknown names are a UserError listing the choices
    locate = _LOCATIONS.get(name)
    candidates = locate(root) if locate is not None else []
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


def subset(n: int, k: int, seed: int, which: int) -> torch.Tensor:
    """``k`` sorted indices of ``range(n)`` drawn from stream ``(seed, "subset", which)``."""
    perm = torch.randperm(n, generator=torch_generator(seed, "subset", which))
    return perm[:k].sort().values


def channel_stats(x: torch.Tensor) -> Stats:
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


def image_dataset(name: str, train_x: Array, train_y: Array, test_x: Array, test_y: Array, *,
                  num_classes: int | None = None, stats: Stats | None = None,
                  classes: list[str] | None = None,
                  train_groups: torch.Tensor | None = None,
                  test_groups: torch.Tensor | None = None) -> Dataset:
    """Wrap uint8 NCHW arrays; mean/std are the given standard values or computed from train.
    ``train_groups``/``test_groups``: each sample's user (natural datasets)."""
    tx, ty = torch.as_tensor(train_x), torch.as_tensor(train_y).long()
    vx, vy = torch.as_tensor(test_x), torch.as_tensor(test_y).long()
    if num_classes is None:
        num_classes = len(classes) if classes else int(max(ty.max(), vy.max())) + 1
    mean, std = stats if stats is not None else channel_stats(tx)
    return Dataset(name, tx, ty, vx, vy, num_classes, mean, std, train_groups, classes,
                   test_groups=test_groups)


def missing(name: str, paths: Sequence[Path], how: str | None = None) -> DatasetMissingError:
    """The one-line error for dataset ``name`` absent from all of ``paths``."""
    where = " or ".join(str(p) for p in paths)
    if how is None:
        how = f"run `fedweave data download {name}` or set data.root"
    return DatasetMissingError(f"dataset {name!r} not found: expected {where}; {how}")



def unreadable(path: Path, problem: str, fix: str) -> UserError:
    """The one-line error for a dataset file that exists but cannot be used:
    ``<path>: <problem>; <fix>`` (newlines in ``problem`` folded, long ones shortened)."""
    text = " ".join(problem.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return UserError(f"{path}: {text}; {fix}")


def redownload(name: str) -> str:
    """The fix for a damaged file of a downloadable dataset."""
    return f"re-download with fedweave data download {name}"


def reason(exc: BaseException) -> str:
    """A short description of a reader's exception: its message, else its type name."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
