"""Compute cost of a model per parameter: the multiply-adds each parameter element takes part
in per sample. Simulated compute scales with it (a pruned or width-sliced model computes less:
PruneFL's premise), and PR-FL's per-layer cost coefficient uses it."""

from __future__ import annotations

import torch
from torch import nn

from fedweave.core.population import ParamLayout


@torch.no_grad()
def uses_per_parameter(model: nn.Module, layout: ParamLayout, input_shape: tuple[int, ...]
                       ) -> torch.Tensor:
    """float64 [P]: per sample, how many output positions each parameter element is used for
    (a conv weight or bias: H_out·W_out; a linear layer's: 1 for flat inputs; a norm's: its
    positions), so Σ = multiply-adds of one forward pass (biases and norms counted once per
    position). Measured with forward hooks on one zero input."""
    positions: dict[str, float] = {}
    hooks = []
    for prefix, module in model.named_modules():
        names = [n for n, _ in module.named_parameters(recurse=False)]
        if not names:
            continue

        def hook(mod: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor,
                 prefix: str = prefix, names: list[str] = names) -> None:
            # out: [1, C, *spatial] (conv, norm) or [1, ..., F] (linear)
            per = out.numel() / max(out.shape[1] if out.dim() > 2 else out.shape[-1], 1)
            for n in names:
                positions[f"{prefix}.{n}" if prefix else n] = float(per)

        hooks.append(module.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        param = next(model.parameters())
        model(torch.zeros(1, *input_shape, dtype=param.dtype, device=param.device))
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    out = torch.ones(layout.total, dtype=torch.float64)
    for name, sl in layout.layer_slices():
        out[sl] = positions.get(name, 1.0)
    return out
