"""Data attacks: the attackers' training shards are corrupted once, before the run.

    label_flip     y → C − 1 − y on every training sample of an attacker
    noisy_labels   ⌈label_fraction · n_i⌉ of each attacker's training labels get another class,
                   uniformly (``fedweave.data.noise.flip_labels`` with the attackers as the
                   noisy nodes: the same draws as ``data.label_noise``)
    input_noise    a fixed N(0, std²) perturbation of the normalised inputs of every training
                   sample of the attackers, added when batches are gathered
                   (``fedweave.data.noise.input_noise``: the same draws as ``data.input_noise``)

Validation and test samples stay clean. The corrupted data is a new ``FederatedData`` (the
caller's tensors are never written).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from fedweave.config import AttackConfig, DataConfig
from fedweave.data.federated import FederatedData
from fedweave.data.noise import flip_labels, input_noise
from fedweave.errors import UserError
from fedweave.robust.attacks import DATA_ATTACKS, attackers


def corrupt_data(data: FederatedData, cfg: AttackConfig, seed: int) -> FederatedData:
    """``data`` with the attackers' training shards corrupted (itself without a data attack)."""
    if cfg.name not in DATA_ATTACKS:
        return data
    bad = torch.nonzero(attackers(cfg, data.nodes, seed)).flatten().tolist()
    faults = DataConfig(label_noise=cfg.label_fraction, input_noise=cfg.std, noisy_nodes=bad)
    if cfg.name == "input_noise":
        if data.input_noise is not None:
            raise UserError("attack.name=input_noise and data.input_noise both perturb inputs: "
                            "use one of them")
        noise = input_noise(len(data.y), data.input_shape, data.train_idx, faults, seed)
        return replace(data, input_noise=None if noise is None else noise.to(data.y.device))
    if cfg.name == "noisy_labels":
        y, _ = flip_labels(data.y.cpu(), data.train_idx, faults, data.num_classes, seed)
        return replace(data, y=y.to(data.y.device))
    y = data.y.clone()
    idx = torch.cat([data.train_idx[i] for i in bad]).to(y.device)
    y[idx] = data.num_classes - 1 - y[idx]
    return replace(data, y=y)
