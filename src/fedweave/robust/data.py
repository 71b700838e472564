"""Data attacks: the attackers' training shards are corrupted once, before the run.

    label_flip     y → C − 1 − y on every training sample of an attacker
    noisy_labels   a ``label_fraction`` of each attacker's training samples (drawn from
                   (seed, "noisy-labels", node)) get another class, uniformly
    input_noise    x → x + N(0, std²) on the normalised inputs of the attackers' training
                   samples (noise fixed per sample, from (seed, "input-noise"))

Validation and test samples stay clean. The corrupted data is a new ``FederatedData`` (the
caller's tensors are never written); with ``input_noise`` the images are stored normalised
as float32 from then on (4× the memory of uint8).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from fedweave.config import AttackConfig
from fedweave.data.federated import FederatedData
from fedweave.rng import numpy_rng, torch_generator
from fedweave.robust.attacks import DATA_ATTACKS, attackers


def corrupt_data(data: FederatedData, cfg: AttackConfig, seed: int) -> FederatedData:
    """``data`` with the attackers' training shards corrupted (itself without a data attack)."""
    if cfg.name not in DATA_ATTACKS:
        return data
    bad = torch.nonzero(attackers(cfg, data.nodes, seed)).flatten().tolist()
    idx = torch.cat([data.train_idx[i] for i in bad]).to(data.y.device)
    if cfg.name == "input_noise":
        x = data.features(data.x)  # normalised float32 (a copy when stored as uint8)
        if x is data.x:
            x = x.clone()
        gen = torch_generator(seed, "input-noise")
        noise = torch.randn((len(idx), *x.shape[1:]), generator=gen) * cfg.std
        x[idx] += noise.to(x)
        return replace(data, x=x, mean=None, std=None)
    y = data.y.clone()
    c = data.num_classes
    if cfg.name == "label_flip":
        y[idx] = c - 1 - y[idx]
        return replace(data, y=y)
    for node in bad:  # noisy_labels
        shard = data.train_idx[node].to(y.device)
        rng = numpy_rng(seed, "noisy-labels", node)
        count = round(cfg.label_fraction * len(shard))
        pick = shard[torch.from_numpy(rng.choice(len(shard), count, replace=False)).to(y.device)]
        shift = torch.from_numpy(rng.integers(1, c, size=count)).to(y)
        y[pick] = (y[pick] + shift) % c
    return replace(data, y=y)
