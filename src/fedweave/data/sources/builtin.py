"""The built-in, offline datasets: scikit-learn's 8×8 ``digits`` and the FedProx
``synthetic`` benchmark."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.memory import require_memory
from fedweave.data.sources.base import Dataset, image_dataset, register_dataset
from fedweave.errors import UserError
from fedweave.rng import numpy_rng

SYNTHETIC_MAX_SAMPLES = 2000  # cap of samples per synthetic device (before the test split)


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
    return image_dataset("digits", images[~is_test], target[~is_test], images[is_test],
                         target[is_test], num_classes=10, classes=[str(i) for i in range(10)])


@register_dataset("synthetic")
def load_synthetic(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """FedProx Synthetic(α, β) (Li et al. 2020, §5.1), one device per node: u_k ~ N(0, α²),
    W_k, b_k ~ N(u_k, 1); B_k ~ N(0, β²), v_k ~ N(B_k, 1); x ~ N(v_k, Σ) with Σ_jj = j^-1.2;
    y = argmax softmax(W_k x + b_k). ``iid``: one W, b ~ N(0, 1) and v = 0 for every device.
    Samples per device: int(lognormal(samples_mean, samples_sigma)) + min_samples, capped at
    ``SYNTHETIC_MAX_SAMPLES``; the last ``test_fraction`` of each device's samples is test.

    Memory: the sizes are drawn first, so a dataset that would not fit is refused up front
    with its estimate; devices are drawn one at a time (float64, as the benchmark) straight
    into preallocated float32 arrays, so the peak is the dataset plus one device."""
    sc = cfg.synthetic
    k, dim, n_cls = cfg.nodes, sc.dim, sc.classes
    # before the sizes are drawn (8 bytes per node): every device has min_samples at least
    require_memory(k * (8 + sc.min_samples * (4 * dim + 8)) + dim * n_cls * 8,
                   f"data.dataset=synthetic with data.nodes={k} (at least {k * sc.min_samples} "
                   f"samples × {dim} features)", "lower data.nodes, data.synthetic.min_samples "
                   "or data.synthetic.dim")
    rng = numpy_rng(seed, "synthetic")
    sizes = np.minimum(rng.lognormal(sc.samples_mean, sc.samples_sigma, k).astype(np.int64)
                       + sc.min_samples, SYNTHETIC_MAX_SAMPLES)
    # min(max(1, round(f·n)), n − 1), rounding half to even like Python's round
    n_test = np.minimum(np.maximum(1, np.rint(sc.test_fraction * sizes).astype(np.int64)),
                        sizes - 1)
    n_train = sizes - n_test
    total, train_total = int(sizes.sum()), int(n_train.sum())
    # features (float32) and labels of every sample, device ids and index shards of train,
    # and the validation samples gathered for an evaluation
    require_memory(int(total * (4 * dim + 8) + train_total * (24 + cfg.val_fraction * 4 * dim)),
                   f"data.dataset=synthetic with data.nodes={k} ({total} samples × {dim} "
                   "features)", "lower data.nodes or data.synthetic.samples_mean")
    u = rng.normal(0.0, sc.alpha, k)
    b_mean = rng.normal(0.0, sc.beta, k)
    sd = np.arange(1, dim + 1, dtype=np.float64) ** -0.6  # sqrt of Σ_jj = j^-1.2
    w_global = rng.normal(0.0, 1.0, (dim, n_cls))
    b_global = rng.normal(0.0, 1.0, n_cls)
    train_x = np.empty((train_total, dim), dtype=np.float32)
    train_y = np.empty(train_total, dtype=np.int64)
    test_x = np.empty((total - train_total, dim), dtype=np.float32)
    test_y = np.empty(total - train_total, dtype=np.int64)
    at_train = at_test = 0
    for node in range(k):
        if sc.iid:
            w, b, v = w_global, b_global, np.zeros(dim)
        else:
            w = rng.normal(u[node], 1.0, (dim, n_cls))
            b = rng.normal(u[node], 1.0, n_cls)
            v = rng.normal(b_mean[node], 1.0, dim)
        n, m = int(sizes[node]), int(n_train[node])
        x = rng.standard_normal((n, dim))
        x *= sd
        x += v  # v + sd·z, in place (the same floats)
        y = np.argmax(x @ w + b, axis=1)  # argmax of softmax = argmax of the logits
        train_x[at_train: at_train + m], train_y[at_train: at_train + m] = x[:m], y[:m]
        test_x[at_test: at_test + n - m], test_y[at_test: at_test + n - m] = x[m:], y[m:]
        at_train, at_test = at_train + m, at_test + n - m
    groups = np.repeat(np.arange(k, dtype=np.int64), n_train)
    return Dataset("synthetic", torch.from_numpy(train_x), torch.from_numpy(train_y),
                   torch.from_numpy(test_x), torch.from_numpy(test_y), n_cls, None, None,
                   torch.from_numpy(groups))
