"""What one round reports (``Algorithm.round`` returns it; the runner and the callbacks read
it): a record of plain numbers and tensors, so the layers that read it need no algorithm."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class RoundResult:
    """What a round reports: mean training loss/accuracy, traffic, virtual time spent."""

    train_loss: float
    train_acc: float
    bytes_up: int = 0
    bytes_down: int = 0
    sim_time: float = 0.0
    node_train: dict[str, torch.Tensor] = field(default_factory=dict)  # per evaluated model
    extras: dict[str, float] = field(default_factory=dict)
    #: per-client rows of this round (federated: who took part and their training stats)
    clients: dict[str, torch.Tensor] = field(default_factory=dict)
