"""The representation z of a classifier: the input of its last ``nn.Linear`` layer.

Model-contrastive learning (MOON) needs z of the model being trained inside the engines'
loss, which only see the logits. ``RepresentationTap`` puts a forward pre-hook on the model's
last Linear layer: while ``armed``, every forward stores that layer's input in ``tap.z``. The
engines run the forward and then the data term in one function call (the loop engine on the
module, the vectorized one under ``vmap(grad(...))`` over ``functional_call``), so a data term
reads ``tap.z`` of the very forward that produced its logits, at the same transform level.
``representations`` gives z of fixed models (no gradient, evaluation mode).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from fedweave.core.population import Buffers, ParamLayout
from fedweave.errors import UserError


def last_linear(model: nn.Module) -> nn.Module:
    """The model's last ``nn.Linear`` module (in ``modules()`` order)."""
    found = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not found:
        raise UserError(f"the model ({type(model).__name__}) has no Linear layer, so it has no "
                        "representation (the input of its classifier): use a model whose last "
                        "layer is Linear (logistic, mlp, cnn, lenet, ...)")
    return found[-1]


class RepresentationTap:
    """Stores the input of the model's last Linear layer on every forward while armed."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.z: torch.Tensor | None = None
        self.armed = False
        self.handle = last_linear(model).register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        if self.armed:
            self.z = args[0]

    @contextmanager
    def on(self) -> Iterator[RepresentationTap]:
        """Arm the tap for the block; ``z`` is cleared afterwards."""
        self.armed = True
        try:
            yield self
        finally:
            self.armed = False
            self.z = None

    def take(self) -> torch.Tensor:
        """z of the latest forward (``[B, d]``)."""
        if self.z is None:
            raise RuntimeError("no representation captured: arm the tap around the forward")
        return self.z

    @torch.no_grad()
    def representations(self, layout: ParamLayout, params: torch.Tensor, buffers: Buffers,
                        x: torch.Tensor, batch: int = 2048) -> torch.Tensor:
        """z of the fixed model ``params[P]`` (``buffers`` of one model) on inputs ``x``
        (``[n, d]``, evaluation mode, batches of ``batch``)."""
        was = self.model.training
        self.model.eval()
        views = layout.views(params)
        out = []
        try:
            with self.on():
                for s in range(0, len(x), batch):
                    functional_call(self.model, (views, buffers), (x[s: s + batch],))
                    out.append(self.take().detach().flatten(1))
        finally:
            self.model.train(was)
        return torch.cat(out) if out else x.new_zeros((0, 0))
