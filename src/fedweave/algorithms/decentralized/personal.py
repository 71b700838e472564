"""Personalisation for peers: nodes mix the shared body and keep a personal head.

``algorithm.personal_head: true`` on D-SGD and gossip splits each node's model into a *body*
(every parameter but the model's last Linear layer) and a *head* (that layer's weight and
bias, the classifier; the FedPer split of Arivazhagan et al. 2019 carried to peer-to-peer
learning). Every local step trains the whole model on the node's own data; combining with the
neighbours touches the body only:

    x_i ← x_i − lr·u_i                                   (local step, body and head)
    body_i ← Σ_j W_ij body_j     (D-SGD; gossip: (body_i + body_j)/2)
    head_i unchanged

so the bodies reach consensus (exactly after every combine on a complete graph with uniform
mixing) while each head fits its node's label distribution. Each node's model is its body
and its own head, so the per-node evaluation (validation, or a node's own test split) uses the
personal model. Messages count the body only (``message_bytes``). No extra state: the heads
live in the node stack ``x[N, P]`` like the rest of the model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pydantic import Field
from torch import nn

from fedweave.core.population import ParamLayout
from fedweave.errors import UserError
from fedweave.training.representation import last_linear


def personal_head_field() -> Any:
    """The ``algorithm.personal_head`` key of the peer algorithms that support it."""
    return Field(False, description="keep the model's last Linear layer (the head) personal: "
                 "neighbours mix only the body (every other parameter); see "
                 "fedweave.algorithms.decentralized.personal")


def head_columns(model: nn.Module, layout: ParamLayout) -> torch.Tensor:
    """Indices into the flat parameter vector of the model's last Linear layer (int64)."""
    head = last_linear(model)
    prefix = next(name for name, mod in model.named_modules() if mod is head)
    cols = [torch.arange(sl.start, sl.stop) for name, sl in layout.layer_slices()
            if name.rsplit(".", 1)[0] == prefix]
    out = torch.cat(cols)
    if len(out) == layout.total:
        raise UserError("algorithm.personal_head=true: the model's last Linear layer is the "
                        "whole model, so there is no body to share; use a model with hidden "
                        "layers (e.g. model.name=mlp or cnn)")
    return out


class PersonalHead:
    """Mixin of a decentralized algorithm: ``with self.personal():`` around its combine keeps
    the head columns of every node's model as they were (module docstring)."""

    ctx: Any
    config: Any
    x: torch.Tensor
    message_keys: tuple[str, ...]

    def __init__(self, ctx: Any, config: Any) -> None:
        self.head: torch.Tensor | None = None
        if config.personal_head:
            self.head = head_columns(ctx.model, ctx.layout).to(ctx.device)
        super().__init__(ctx, config)  # type: ignore[call-arg]

    @contextmanager
    def personal(self) -> Iterator[None]:
        """Restore the head columns after the block (a mixing writes a new ``x``)."""
        if self.head is None:
            yield
            return
        before = self.x
        kept = before[:, self.head]
        yield
        self.x[:, self.head] = kept  # a fresh tensor after a mixing; unchanged values else

    def message_bytes(self) -> int:
        """The body only when the head is personal."""
        total = self.ctx.layout.total
        shared = total - (0 if self.head is None else len(self.head))
        return len(self.message_keys) * shared * self.ctx.init_params.element_size()
