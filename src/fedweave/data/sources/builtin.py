"""The built-in, offline datasets: scikit-learn's 8×8 ``digits`` and the FedProx
``synthetic`` benchmark."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.sources.base import Dataset, image_dataset, register_dataset
from fedweave.errors import UserError
from fedweave.memory import require_memory
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


class SyntheticDevices:
    """FedProx Synthetic(α, β) (Li et al. 2020, §5.1), device by device: u_k ~ N(0, α²),
    W_k, b_k ~ N(u_k, 1); B_k ~ N(0, β²), v_k ~ N(B_k, 1); x ~ N(v_k, Σ) with Σ_jj = j^-1.2;
    y = argmax softmax(W_k x + b_k). ``iid``: one W, b ~ N(0, 1) and v = 0 for every device.
    Samples per device: int(lognormal(samples_mean, samples_sigma)) + min_samples, capped at
    ``SYNTHETIC_MAX_SAMPLES``; the last ``test_fraction`` of each device's samples is test.

    The sizes, u, B and the iid model come from stream ``(seed, "synthetic")`` (O(devices)
    numbers); device k's W_k, b_k, v_k and samples from its own stream ``(seed,
    "synthetic-device", k)``, so any device is drawn on its own, in any order, with the same
    numbers (``fedweave.data.ondemand`` draws only the devices a round needs)."""

    def __init__(self, cfg: DataConfig, seed: int) -> None:
        sc = cfg.synthetic
        self.seed, self.dim, self.classes, self.iid = seed, sc.dim, sc.classes, sc.iid
        k = cfg.nodes
        # before the sizes are drawn: five float64/int64 numbers per device
        require_memory(k * 40, f"data.dataset=synthetic with data.nodes={k}",
                       "lower data.nodes")
        rng = numpy_rng(seed, "synthetic")
        self.sizes = np.minimum(rng.lognormal(sc.samples_mean, sc.samples_sigma, k)
                                .astype(np.int64) + sc.min_samples, SYNTHETIC_MAX_SAMPLES)
        # min(max(1, round(f·n)), n − 1), rounding half to even like Python's round
        self.n_test = np.minimum(np.maximum(1, np.rint(sc.test_fraction * self.sizes)
                                            .astype(np.int64)), self.sizes - 1)
        self.n_train = self.sizes - self.n_test
        self.u = rng.normal(0.0, sc.alpha, k)
        self.b_mean = rng.normal(0.0, sc.beta, k)
        self.w_global = rng.normal(0.0, 1.0, (sc.dim, sc.classes))
        self.b_global = rng.normal(0.0, 1.0, sc.classes)
        self.sd = np.arange(1, sc.dim + 1, dtype=np.float64) ** -0.6  # sqrt of Σ_jj = j^-1.2

    def __len__(self) -> int:
        return len(self.sizes)

    def device(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """Device ``node``'s samples (float64 ``[n, dim]``, train first) and labels."""
        rng = numpy_rng(self.seed, "synthetic-device", node)
        if self.iid:
            w, b, v = self.w_global, self.b_global, np.zeros(self.dim)
        else:
            w = rng.normal(self.u[node], 1.0, (self.dim, self.classes))
            b = rng.normal(self.u[node], 1.0, self.classes)
            v = rng.normal(self.b_mean[node], 1.0, self.dim)
        x = rng.standard_normal((int(self.sizes[node]), self.dim))
        x *= self.sd
        x += v  # v + sd·z, in place (the same floats)
        return x, np.argmax(x @ w + b, axis=1)  # argmax of softmax = argmax of the logits


@register_dataset("synthetic")
def load_synthetic(cfg: DataConfig, root: Path, seed: int) -> Dataset:
    """The whole Synthetic(α, β) population (``SyntheticDevices``) in memory, one group per
    device. Memory: the sizes are drawn first, so a dataset that would not fit is refused up
    front with its estimate; devices are drawn one at a time (float64, as the benchmark)
    straight into preallocated float32 arrays, so the peak is the dataset plus one device.
    (A large federated population is drawn on demand instead: ``fedweave.data.ondemand``.)"""
    gen = SyntheticDevices(cfg, seed)
    k, dim = len(gen), gen.dim
    total, train_total = int(gen.sizes.sum()), int(gen.n_train.sum())
    # features (float32) and labels of every sample, device ids and index shards of train,
    # and the validation samples gathered for an evaluation
    require_memory(int(total * (4 * dim + 8) + train_total * (24 + cfg.val_fraction * 4 * dim)),
                   f"data.dataset=synthetic with data.nodes={k} ({total} samples × {dim} "
                   "features)", "lower data.nodes or data.synthetic.samples_mean")
    train_x = np.empty((train_total, dim), dtype=np.float32)
    train_y = np.empty(train_total, dtype=np.int64)
    test_x = np.empty((total - train_total, dim), dtype=np.float32)
    test_y = np.empty(total - train_total, dtype=np.int64)
    at_train = at_test = 0
    for node in range(k):
        x, y = gen.device(node)
        n, m = int(gen.sizes[node]), int(gen.n_train[node])
        train_x[at_train: at_train + m], train_y[at_train: at_train + m] = x[:m], y[:m]
        test_x[at_test: at_test + n - m], test_y[at_test: at_test + n - m] = x[m:], y[m:]
        at_train, at_test = at_train + m, at_test + n - m
    groups = np.repeat(np.arange(k, dtype=np.int64), gen.n_train)
    return Dataset("synthetic", torch.from_numpy(train_x), torch.from_numpy(train_y),
                   torch.from_numpy(test_x), torch.from_numpy(test_y), gen.classes, None, None,
                   torch.from_numpy(groups))
