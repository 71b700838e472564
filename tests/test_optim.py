"""Functional optimizers: a row's update is the same float computation whether or not the
other rows of the stack step (engines, cohorts split across ranks and asynchronous nodes rely
on it for bit-identical results), and inactive rows are left untouched."""

from __future__ import annotations

import pytest
import torch

from fedweave.config import TrainConfig
from fedweave.training.optim import FunctionalOptimizer

SETTINGS = [
    {"optimizer": "sgd"},
    {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 1e-3},
    {"optimizer": "sgd", "momentum": 0.9, "nesterov": True},
    {"optimizer": "adam", "weight_decay": 1e-4},
]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("tensor_lr", [False, True])
def test_partial_step_equals_full_step_on_active_rows(setting: dict, inplace: bool,
                                                      tensor_lr: bool) -> None:
    opt = FunctionalOptimizer(TrainConfig(**setting))
    gen = torch.Generator().manual_seed(0)
    params = torch.randn(6, 257, generator=gen)
    grads = [torch.randn(6, 257, generator=gen) for _ in range(3)]
    active = torch.tensor([True, False, True, True, False, True])
    lr = torch.full((6, 1), 0.05) if tensor_lr else 0.05
    full_state, part_state = opt.init(params), opt.init(params)
    full, part = params.clone(), params.clone()
    for g in grads:
        full = opt.step(full, g.clone(), full_state, lr, None, inplace=inplace)
        before = part.clone()
        part = opt.step(part, g.clone(), part_state, lr, active, inplace=inplace)
        assert torch.equal(part[~active], before[~active])  # inactive rows never move
        assert torch.equal(part[active], full[active])        # bit for bit
    for key, value in full_state.items():
        assert torch.equal(part_state[key][active], value[active]), key
        assert not bool(part_state[key][~active].any()), key   # untouched: still zero
