"""FederatedData: the whole dataset as tensors plus per-node index tensors.

Batches are gathered by index (``x[idx]``), never through per-client DataLoaders, so one step of
a whole cohort is one gather of shape [K, B, ...]. Images are stored as uint8; when the float32
model inputs of the training and test images fit ``DECODED_BYTES`` and no augmentation needs the
bytes, they are converted once (``decoded``) and batches and evaluations index those, which
removes a conversion per batch and per evaluation (the same elementwise arithmetic: identical
numbers); otherwise images are converted (and optionally augmented) per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from fedweave.config import DataConfig
from fedweave.data.augment import random_crop_flip
from fedweave.data.noise import InputNoise, flip_labels, input_noise
from fedweave.data.partition import label_counts, partition, split_validation
from fedweave.data.prune import prune_shards
from fedweave.data.sources import Dataset, load_dataset, to_float
from fedweave.rng import torch_generator

DECODED_BYTES = 512 << 20
"""Largest float32 copy of the training and test images kept for a run (Fashion-MNIST: 219 MB)."""


def _rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` for a 1-D ``idx``, as one ``index_select`` over the flattened sample rows
    (the same values; advanced indexing of a 4-D image tensor is about 4× slower on a CPU)."""
    if idx.dim() != 1 or t.dim() < 2 or not t.is_contiguous():
        return t[idx]
    return t.flatten(1).index_select(0, idx).view(len(idx), *t.shape[1:])


@dataclass
class FederatedData:
    x: torch.Tensor
    y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    train_idx: list[torch.Tensor]
    val_idx: list[torch.Tensor]
    augment: bool = False
    seed: int = 0
    #: each node's own test split (``data.client_test_fraction``; empty: none)
    test_idx: list[torch.Tensor] = field(default_factory=list)
    #: corrupted training data (``fedweave.data.noise``): flipped indices, per-sample input noise
    label_noise: torch.Tensor | None = None
    input_noise: InputNoise | None = None
    #: class names of the data set, when it has them (model.json, exported models)
    classes: list[str] | None = None
    #: True where samples are drawn when needed (``fedweave.data.ondemand``): ``x``/``y`` are
    #: then empty placeholders and ``take`` is the only way to the samples
    on_demand: ClassVar[bool] = False
    # derived from the shards, computed once (recomputed when a shard list is replaced)
    _derived: dict[str, tuple[list[torch.Tensor], torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False)
    _decoded: tuple[torch.Tensor, torch.Tensor] | None = field(
        default=None, init=False, repr=False, compare=False)

    def _cached(self, name: str, source: list[torch.Tensor],
                make: Callable[[list[torch.Tensor]], torch.Tensor]) -> torch.Tensor:
        hit = self._derived.get(name)
        if hit is None or hit[0] is not source:
            hit = (source, make(source))
            self._derived[name] = hit
        return hit[1]

    @property
    def nodes(self) -> int:
        return len(self.train_idx)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def sizes(self) -> torch.Tensor:
        """Training samples per node, int64 [N] (computed once per shard list; read-only)."""
        return self._cached("sizes", self.train_idx,
                            lambda s: torch.tensor([len(i) for i in s], dtype=torch.int64))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Model input from stored samples: uint8 images → normalised float32."""
        return to_float(x, self.mean, self.std)

    def decoded(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``features`` of all training and test images, converted on first use and kept
        (module docstring); None for float data, augmented data, or above ``DECODED_BYTES``."""
        if self._decoded is None:
            size = 4 * (self.x.numel() + self.test_x.numel())
            if self.on_demand or self.augment or self.x.dtype != torch.uint8 or \
                    self.test_x.dtype != torch.uint8 or size > DECODED_BYTES:
                return None
            self._decoded = (self.features(self.x), self.features(self.test_x))
        return self._decoded

    def test_inputs(self) -> torch.Tensor:
        """The test samples as engines take them (``decoded`` when kept, else as stored)."""
        dec = self.decoded()
        return self.test_x if dec is None else dec[1]

    def take_inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``take`` for an engine's evaluation: decoded rows when kept (``features`` passes
        float32 through unchanged), else the stored samples."""
        dec = self.decoded()
        if dec is None:
            return self.take(idx)
        idx = idx.to(self.x.device)
        return _rows(dec[0], idx), self.y[idx]

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stored samples (as stored: uint8 images, float features) and labels at the flat
        indices ``idx``, on the data's device."""
        idx = idx.to(self.x.device)
        return _rows(self.x, idx), self.y[idx]

    def gather(self, idx: torch.Tensor, augment_key: tuple[int, ...] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Float inputs and labels at ``idx`` (any shape); augmented when ``augment`` is on and
        a key (round, node, step) is given, with randomness derived from the key."""
        flat = idx.reshape(-1)
        if self.decoded() is not None:
            xb, yb = self.take_inputs(flat)
        else:
            xb, yb = self.take(flat)
            if self.augment and augment_key is not None and xb.dim() == 4:
                xb = random_crop_flip(xb, torch_generator(self.seed, "augment", *augment_key))
            xb = self.features(xb)
        if self.input_noise is not None:
            xb = self.input_noise.add(flat, xb)
        return xb.reshape(*idx.shape, *xb.shape[1:]), yb.reshape(idx.shape)

    def union_train(self) -> torch.Tensor:
        """All nodes' training indices, sorted (the centralized reference's data)."""
        return torch.cat(self.train_idx).sort().values

    def union_val(self) -> torch.Tensor:
        """All nodes' validation indices, sorted and unique (computed once per shard list)."""
        return self._cached("union_val", self.val_idx, lambda s: torch.cat(s).unique())

    def label_counts(self) -> torch.Tensor:
        return label_counts(self.y, self.train_idx, self.num_classes)

    def to(self, device: torch.device) -> FederatedData:
        self.x, self.y = self.x.to(device), self.y.to(device)
        self.test_x, self.test_y = self.test_x.to(device), self.test_y.to(device)
        self._decoded = None
        if self.input_noise is not None:
            self.input_noise = self.input_noise.to(device)
        return self


def build_federated_data(cfg: DataConfig, seed: int, dataset: Dataset | None = None
                         ) -> FederatedData:
    """Load ``cfg.dataset``, partition it over ``cfg.nodes`` and split per-node validation
    (a federated run's large synthetic population: ``fedweave.data.ondemand.build_data``)."""
    ds = dataset if dataset is not None else load_dataset(cfg, seed)
    shards = partition(ds.train_y, cfg, seed, ds.train_groups)
    test_idx: list[torch.Tensor] = []
    if cfg.client_test_fraction:  # the personal test split first: it ignores val_fraction
        shards, test_idx = split_validation(shards, cfg.client_test_fraction, seed,
                                            purpose="client-test")
    train_idx, val_idx = split_validation(shards, cfg.val_fraction, seed, cfg.val_from_train)
    y, flipped = flip_labels(ds.train_y, train_idx, cfg, ds.num_classes, seed)
    noise = input_noise(len(ds.train_y), tuple(ds.train_x.shape[1:]), train_idx, cfg, seed)
    return FederatedData(
        x=ds.train_x, y=y, test_x=ds.test_x, test_y=ds.test_y,
        num_classes=ds.num_classes,
        mean=ds.mean if cfg.normalize else None, std=ds.std if cfg.normalize else None,
        train_idx=prune_shards(train_idx, cfg.prune, y), val_idx=val_idx, test_idx=test_idx,
        augment=cfg.augment,
        seed=seed, label_noise=flipped if cfg.label_noise else None, input_noise=noise,
        classes=list(ds.classes) if ds.classes else None,
    )
