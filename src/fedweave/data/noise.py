"""Corrupted training data for evaluating influence scores (seeded, recorded).

- **Label noise** (``data.label_noise`` = p): on every noisy node (``data.noisy_nodes``, default
  all), ⌈p · n_i⌉ of its training samples, drawn from (seed, "label-noise", node), get a label
  drawn uniformly from the *other* classes. Validation and test labels are never touched
  (unless validation is the training shard, ``data.val_from_train``).
- **Input noise** (``data.input_noise`` = σ): every training sample of the noisy nodes gets a
  fixed Gaussian perturbation N(0, σ²) of its normalised input, drawn from
  (seed, "input-noise", node) — the anomaly of Zhu et al. (ICLR 2025, DICE §5: σ = 100 on one
  node's batches). It is added when training batches are gathered (``FederatedData.gather``);
  evaluation of validation and test samples sees clean inputs.

The affected global training indices are written to ``label_noise.json`` /
``input_noise.json`` (``{"indices": [...]}``) in the run directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from fedweave.callbacks import Callback, register_callback
from fedweave.config import Config, DataConfig
from fedweave.rng import torch_generator

if TYPE_CHECKING:
    from fedweave.callbacks import RunView


@dataclass
class InputNoise:
    """Per-sample noise: ``rows[i]`` is the row of ``noise`` added to training sample i
    (−1: clean)."""

    rows: torch.Tensor    # [n_samples] int64
    noise: torch.Tensor   # [n_noisy, *input_shape] float32

    @property
    def indices(self) -> torch.Tensor:
        return torch.nonzero(self.rows >= 0).flatten()

    def add(self, flat_idx: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:
        """``xb`` (features of samples ``flat_idx``) with their noise added."""
        r = self.rows[flat_idx]
        hit = r >= 0
        if not bool(hit.any()):
            return xb
        xb = xb.clone()
        xb[hit] += self.noise[r[hit]].to(xb.dtype)
        return xb

    def to(self, device: torch.device) -> InputNoise:
        return InputNoise(self.rows.to(device), self.noise.to(device))


def noisy_nodes(cfg: DataConfig, nodes: int) -> list[int]:
    return list(range(nodes)) if cfg.noisy_nodes is None else sorted(set(cfg.noisy_nodes))


def flip_labels(y: torch.Tensor, train_idx: list[torch.Tensor], cfg: DataConfig,
                num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels with ⌈p · n_i⌉ training labels of each noisy node flipped, flipped indices)."""
    if not cfg.label_noise:
        return y, torch.zeros(0, dtype=torch.int64)
    y = y.clone()
    flipped = []
    for node in noisy_nodes(cfg, len(train_idx)):
        shard = train_idx[node]
        gen = torch_generator(seed, "label-noise", node)
        k = math.ceil(cfg.label_noise * len(shard))
        chosen = shard[torch.randperm(len(shard), generator=gen)[:k]]
        shift = torch.randint(1, num_classes, (k,), generator=gen)
        y[chosen] = (y[chosen] + shift) % num_classes
        flipped.append(chosen)
    return y, torch.cat(flipped).sort().values


def input_noise(n_samples: int, input_shape: tuple[int, ...], train_idx: list[torch.Tensor],
                cfg: DataConfig, seed: int) -> InputNoise | None:
    """Fixed N(0, σ²) noise for every training sample of the noisy nodes (None: σ = 0)."""
    if not cfg.input_noise:
        return None
    rows = torch.full((n_samples,), -1, dtype=torch.int64)
    parts: list[torch.Tensor] = []
    offset = 0
    for node in noisy_nodes(cfg, len(train_idx)):
        shard = train_idx[node]
        gen = torch_generator(seed, "input-noise", node)
        rows[shard] = torch.arange(len(shard)) + offset
        offset += len(shard)
        parts.append(cfg.input_noise * torch.randn(len(shard), *input_shape, generator=gen))
    return InputNoise(rows, torch.cat(parts))


class NoiseRecord(Callback):
    """Writes ``label_noise.json`` / ``input_noise.json`` into the run directory."""

    def on_start(self, runner: RunView) -> None:
        data, cfg = runner.ctx.data, runner.config.data
        if runner.run_dir is None:
            return
        if data.label_noise is not None:
            runner.run_dir.write_json("label_noise.json", {
                "fraction": cfg.label_noise, "nodes": noisy_nodes(cfg, data.nodes),
                "indices": data.label_noise.tolist()})
        if data.input_noise is not None:
            runner.run_dir.write_json("input_noise.json", {
                "sigma": cfg.input_noise, "nodes": noisy_nodes(cfg, data.nodes),
                "indices": data.input_noise.indices.cpu().tolist()})


@register_callback
def _noise_record(config: Config) -> Callback | None:
    return NoiseRecord() if config.data.label_noise or config.data.input_noise else None
