"""Synthetic clients drawn on demand: a federated population of Synthetic(α, β) devices whose
samples exist only while a round needs them.

Device k's samples are a function of (seed, k) (``SyntheticDevices``), so nothing of the
population has to be drawn up front: the index space is the one of the eager dataset (device
k's training samples are the global indices ``[o_k, o_k + m_k)``, its validation split drawn
from them as usual), and ``take(idx)`` draws the devices the indices belong to into a window of
bounded size (one cohort's samples at least; cleared when full). A round of a federated run
touches its cohort only (training batches pad inside the node's own shard; evaluation with
``output.client_eval: cohort`` reads the cohort's validation samples), so its cost is the
cohort's, whatever the population. The numbers are those of the eager dataset bit for bit.

Used when the eager dataset would exceed ``ON_DEMAND_BYTES`` and nothing needs the whole
population at once: a federated algorithm (``cohort`` given), partition ``natural``, no
``train_samples`` subset, no label/input noise or pruning. The test set (the held-out part of
every device) is drawn once; ``data.test_samples`` keeps it to a fixed size (then only the
devices holding the chosen test samples are drawn).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.data.federated import FederatedData, build_federated_data
from fedweave.data.sources.base import subset
from fedweave.data.sources.builtin import SyntheticDevices
from fedweave.errors import UserError
from fedweave.memory import require_memory
from fedweave.rng import numpy_rng

#: an eager synthetic dataset above this many bytes is drawn on demand (when it may be)
ON_DEMAND_BYTES = 256 * 2**20


class DeviceWindow:
    """The training samples of the devices drawn lately, in one preallocated buffer of
    ``capacity`` samples; a request for devices that do not fit clears it first."""

    def __init__(self, devices: SyntheticDevices, capacity: int,
                 device: torch.device | str = "cpu") -> None:
        self.devices = devices
        n_train = torch.from_numpy(devices.n_train)
        self.n_train = n_train
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.int64), n_train.cumsum(0)])
        self.capacity = capacity
        self.pos = torch.full((len(devices),), -1, dtype=torch.int64)
        self.held: list[int] = []
        self.fill = 0
        self.x = torch.empty((capacity, devices.dim), dtype=torch.float32, device=device)
        self.y = torch.empty(capacity, dtype=torch.int64, device=device)
        #: devices drawn so far (a round's cost; tests read it)
        self.drawn = 0

    def to(self, device: torch.device | str) -> DeviceWindow:
        self.x, self.y = self.x.to(device), self.y.to(device)
        return self

    def clear(self) -> None:
        self.pos[self.held] = -1
        self.held, self.fill = [], 0

    def _draw(self, node: int, into_x: torch.Tensor, into_y: torch.Tensor) -> None:
        x, y = self.devices.device(node)
        m = int(self.devices.n_train[node])
        into_x.copy_(torch.from_numpy(x[:m]))  # float64 → float32 as the eager dataset
        into_y.copy_(torch.from_numpy(y[:m]))
        self.drawn += 1

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = idx.reshape(-1).cpu()
        owner = torch.searchsorted(self.offsets, flat, right=True) - 1
        need = owner.unique()
        missing = need[self.pos[need] < 0]
        if len(missing):
            size = int(self.n_train[missing].sum())
            if self.fill + size > self.capacity:
                self.clear()
                missing, size = need, int(self.n_train[need].sum())
            if size > self.capacity:  # larger than any cohort (client_eval: all): not kept
                return self._direct(flat, owner, need)
            for node in missing.tolist():
                m = int(self.n_train[node])
                self._draw(node, self.x[self.fill: self.fill + m], self.y[self.fill: self.fill + m])
                self.pos[node] = self.fill
                self.held.append(node)
                self.fill += m
        where = (self.pos[owner] + flat - self.offsets[owner]).to(self.x.device)
        return self.x[where], self.y[where]

    def _direct(self, flat: torch.Tensor, owner: torch.Tensor, need: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples of more devices than the window holds: drawn device by device, unkept."""
        out_x = torch.empty((len(flat), self.devices.dim), dtype=torch.float32)
        out_y = torch.empty(len(flat), dtype=torch.int64)
        order = torch.argsort(owner, stable=True)
        ranked = owner[order]
        lo = torch.searchsorted(ranked, need).tolist()
        hi = torch.searchsorted(ranked, need, right=True).tolist()
        for node, a, b in zip(need.tolist(), lo, hi, strict=True):
            rows = order[a:b]
            x, y = self.devices.device(node)
            local = (flat[rows] - self.offsets[node]).numpy()
            out_x[rows] = torch.from_numpy(x[local]).float()
            out_y[rows] = torch.from_numpy(y[local])
            self.drawn += 1
        return out_x.to(self.x.device), out_y.to(self.y.device)


def _test_set(devices: SyntheticDevices, cfg: DataConfig, seed: int
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """The eager dataset's test set (the held-out tail of every device, device by device),
    or its ``test_samples`` subset (stream ``(seed, "subset", 1)``, as ``load_dataset``):
    only the devices holding chosen samples are drawn."""
    n_test = torch.from_numpy(devices.n_test)
    total = int(n_test.sum())
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), n_test.cumsum(0)])
    keep = subset(total, cfg.test_samples, seed, 1) \
        if cfg.test_samples is not None and cfg.test_samples < total else torch.arange(total)
    owner = torch.searchsorted(offsets, keep, right=True) - 1
    x = torch.empty((len(keep), devices.dim), dtype=torch.float32)
    y = torch.empty(len(keep), dtype=torch.int64)
    bounds = torch.searchsorted(owner, torch.arange(len(devices) + 1))  # keep is sorted
    for node in owner.unique().tolist():
        lo, hi = int(bounds[node]), int(bounds[node + 1])
        xs, ys = devices.device(node)
        local = (keep[lo:hi] - offsets[node]).numpy() + int(devices.n_train[node])
        x[lo:hi] = torch.from_numpy(xs[local]).float()
        y[lo:hi] = torch.from_numpy(ys[local])
    return x, y


def contiguous_split(counts: np.ndarray, fraction: float, seed: int, from_train: bool = False
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``split_validation`` of the contiguous shards ``[o_k, o_k + counts_k)`` (the same
    streams ``(seed, "validation", node)``, the same parts), node by node into two flat index
    arrays: memory is the indices themselves, no population-sized temporaries."""
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if from_train:
        shards = [torch.arange(int(offsets[k]), int(offsets[k + 1])) for k in range(len(counts))]
        return shards, list(shards)
    n_val = np.array([min(round(fraction * int(n)), max(int(n) - 1, 0)) for n in counts],
                     dtype=np.int64)
    n_train = counts - n_val
    train_flat = np.empty(int(n_train.sum()), dtype=np.int64)
    val_flat = np.empty(int(n_val.sum()), dtype=np.int64)
    at_t = at_v = 0
    for node in range(len(counts)):
        n, v, o = int(counts[node]), int(n_val[node]), int(offsets[node])
        if v:
            held = numpy_rng(seed, "validation", node).permutation(n)[:v]
            keep = np.ones(n, dtype=bool)
            keep[held] = False
            val_flat[at_v: at_v + v] = np.sort(held) + o
            train_flat[at_t: at_t + n - v] = np.flatnonzero(keep) + o
        else:
            train_flat[at_t: at_t + n] = np.arange(o, o + n)
        at_t, at_v = at_t + n - v, at_v + v
    return (list(torch.from_numpy(train_flat).split(n_train.tolist())),
            list(torch.from_numpy(val_flat).split(n_val.tolist())))


def on_demand_possible(cfg: DataConfig, cohort: int | None) -> bool:
    """Whether ``cfg`` can be drawn on demand (see the module docstring)."""
    return (cohort is not None and cfg.dataset == "synthetic" and cfg.partition == "natural"
            and cfg.train_samples is None and cfg.label_noise == 0 and cfg.input_noise == 0
            and cfg.prune.scores is None)


def eager_bytes(devices: SyntheticDevices, cfg: DataConfig) -> int:
    """Bytes of the whole population in memory (what ``load_synthetic`` checks)."""
    total, train = int(devices.sizes.sum()), int(devices.n_train.sum())
    return int(total * (4 * devices.dim + 8) + train * (24 + cfg.val_fraction * 4 * devices.dim))


def on_demand_data(cfg: DataConfig, seed: int, cohort: int | None) -> FederatedData | None:
    """The population of ``cfg`` drawn on demand, or None where the eager dataset is small or
    something needs all of it."""
    if not on_demand_possible(cfg, cohort) or cfg.client_test_fraction:
        return None  # a personal test split needs every shard drawn
    assert cohort is not None
    devices = SyntheticDevices(cfg, seed)
    if eager_bytes(devices, cfg) <= ON_DEMAND_BYTES:
        return None
    train_total = int(devices.n_train.sum())
    if cfg.nodes * cfg.min_samples > train_total:
        raise UserError(
            f"data.nodes={cfg.nodes} needs at least {cfg.nodes * cfg.min_samples} training "
            f"samples (data.min_samples={cfg.min_samples} each) but the dataset has "
            f"{train_total}: lower data.nodes or data.min_samples")
    # the window holds the largest possible cohort: its devices' training samples
    capacity = int(np.sort(devices.n_train)[::-1][:cohort].sum())
    per_sample = 4 * devices.dim + 8
    n_test = int(devices.n_test.sum()) if cfg.test_samples is None else \
        min(cfg.test_samples, int(devices.n_test.sum()))
    # shard and validation indices (and the split's temporaries), the window, the test set
    require_memory(train_total * 24 + capacity * per_sample + n_test * per_sample,
                   f"data.dataset=synthetic with data.nodes={cfg.nodes} drawn on demand "
                   f"({train_total} training samples, cohorts of {cohort})",
                   "lower data.nodes, algorithm.clients_per_round or data.test_samples")
    return OnDemandData.build(devices, cfg, seed, capacity)


def _placeholder(dim: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty((0, dim) if dim else (0,), dtype=dtype)


@dataclass
class OnDemandData(FederatedData):
    """``FederatedData`` whose ``x``/``y`` are empty placeholders (shape, dtype, device):
    samples come from ``take`` (the device window), never from indexing ``x``."""

    window: DeviceWindow | None = field(default=None, repr=False, compare=False)
    on_demand: ClassVar[bool] = True

    @classmethod
    def build(cls, devices: SyntheticDevices, cfg: DataConfig, seed: int, capacity: int
              ) -> OnDemandData:
        # partition natural with one device per node: node k's shard is device k's samples
        train_idx, val_idx = contiguous_split(devices.n_train, cfg.val_fraction, seed,
                                              cfg.val_from_train)
        test_x, test_y = _test_set(devices, cfg, seed)
        return cls(x=_placeholder(devices.dim, torch.float32), y=_placeholder(0, torch.int64),
                   test_x=test_x, test_y=test_y, num_classes=devices.classes, mean=None,
                   std=None, train_idx=train_idx, val_idx=val_idx, augment=False, seed=seed,
                   window=DeviceWindow(devices, capacity))

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.window is not None
        return self.window.take(idx)

    def to(self, device: torch.device) -> OnDemandData:
        super().to(device)
        if self.window is not None:
            self.window.to(device)
        return self

    def label_counts(self) -> torch.Tensor:
        """Samples per node and class: every device drawn once (slow for a large population;
        the run directory's partition.json leaves them out)."""
        assert self.window is not None
        out = torch.zeros(self.nodes, self.num_classes, dtype=torch.int64)
        for node, shard in enumerate(self.train_idx):
            _, y = self.window._direct(shard, torch.full_like(shard, node), torch.tensor([node]))
            out[node] = torch.bincount(y.cpu(), minlength=self.num_classes)
        return out


def build_data(cfg: DataConfig, seed: int, cohort: int | None = None) -> FederatedData:
    """The run's data: drawn on demand when ``on_demand_data`` says so (``cohort``: clients a
    federated round trains; None: not a federated run), else ``build_federated_data``."""
    lazy = on_demand_data(cfg, seed, cohort) if cohort is not None else None
    return lazy if lazy is not None else build_federated_data(cfg, seed)
