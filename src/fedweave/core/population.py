"""Stacked node states.

N node models are one float tensor ``params[N, P]`` (every parameter flattened and
concatenated in ``named_parameters`` order) plus stacked buffers ``{name: [N, ...]}``. Mixing
(W @ X), averaging, duals and momenta are plain tensor ops on that matrix; ``ParamLayout``
gives per-parameter views (free, no copy) for ``torch.func.functional_call``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

Buffers = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ParamLayout:
    """Names, shapes and offsets of a model's parameters in the flat vector."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    offsets: tuple[int, ...]
    total: int

    @classmethod
    def of(cls, model: nn.Module) -> ParamLayout:
        names, shapes, offsets, total = [], [], [], 0
        for name, p in model.named_parameters():
            names.append(name)
            shapes.append(p.shape)
            offsets.append(total)
            total += p.numel()
        return cls(tuple(names), tuple(shapes), tuple(offsets), total)

    def views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``flat[..., P]`` → ``{name: [..., *shape]}`` views sharing storage."""
        lead = flat.shape[:-1]
        return {
            name: flat[..., off: off + shape.numel()].view(*lead, *shape)
            for name, shape, off in zip(self.names, self.shapes, self.offsets, strict=True)
        }

    def flatten(self, tensors: dict[str, torch.Tensor], lead: int = 1) -> torch.Tensor:
        """``{name: [..., *shape]}`` → ``[..., P]`` (``lead`` leading dims kept)."""
        return torch.cat([tensors[n].flatten(lead) for n in self.names], dim=-1)

    def layer_slices(self) -> list[tuple[str, slice]]:
        """(name, slice into the flat vector) per parameter tensor."""
        return [(n, slice(o, o + s.numel()))
                for n, s, o in zip(self.names, self.shapes, self.offsets, strict=True)]

    def fan_in(self) -> torch.Tensor:
        """Per-element fan-in of its layer (input features × kernel size), float [P]; biases
        and norm parameters take their layer's weight fan-in (used by ADMM/PDMM layer scales)."""
        out = torch.ones(self.total, dtype=torch.float64)
        last = 1
        for _name, shape, off in zip(self.names, self.shapes, self.offsets, strict=True):
            if len(shape) >= 2:
                last = int(torch.Size(shape[1:]).numel())
            out[off: off + shape.numel()] = last
        return out


def flat_params(model: nn.Module) -> torch.Tensor:
    """A model's parameters as one detached flat vector [P]."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def load_flat(model: nn.Module, flat: torch.Tensor) -> None:
    """Copy a flat vector [P] into a model's parameters."""
    torch.nn.utils.vector_to_parameters(flat, model.parameters())


def model_buffers(model: nn.Module) -> Buffers:
    return {n: b.detach().clone() for n, b in model.named_buffers()}


def stack_buffers(buffers: Buffers, n: int) -> Buffers:
    """Repeat one model's buffers for ``n`` nodes: ``{name: [n, ...]}``."""
    return {k: v.unsqueeze(0).repeat(n, *([1] * v.dim())) for k, v in buffers.items()}


def select_buffers(buffers: Buffers, index: torch.Tensor | int) -> Buffers:
    return {k: v[index] for k, v in buffers.items()}


def mean_buffers(buffers: Buffers, weights: torch.Tensor) -> Buffers:
    """Weighted mean over the leading node dim of float buffers (BN running stats); integer
    buffers (num_batches_tracked) take the maximum."""
    out = {}
    for k, v in buffers.items():
        if v.is_floating_point():
            w = (weights / weights.sum()).to(v.dtype).view(-1, *([1] * (v.dim() - 1)))
            out[k] = (w * v).sum(0)
        else:
            out[k] = v.max(0).values
    return out


def weighted_mean(params: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Σ_i w_i x_i / Σ_i w_i over the node dim of ``params[K, P]``."""
    w = weights.to(params.dtype)
    return (w / w.sum()) @ params


def slice_index(full: ParamLayout, sub: ParamLayout) -> torch.Tensor:
    """Where a width-sliced submodel lives in the full model's flat vector: for every
    parameter (same names, same order, every dimension of the submodel's shape at most the
    full one's), the indices of the leading box ``p[:s0, :s1, ...]`` (HeteroFL: the first
    channels of every layer). ``full_flat[..., index]`` is the submodel; writing through the
    index puts it back. int64 ``[sub.total]``."""
    if full.names != sub.names:
        raise ValueError("submodel parameters differ from the full model's: "
                         f"{sub.names} vs {full.names}")
    parts = []
    for name, fs, ss, off in zip(full.names, full.shapes, sub.shapes, full.offsets,
                                 strict=True):
        if len(fs) != len(ss) or any(s > f for s, f in zip(ss, fs, strict=True)):
            raise ValueError(f"{name}: submodel shape {tuple(ss)} does not fit {tuple(fs)}")
        grid = torch.arange(fs.numel(), dtype=torch.int64).view(fs)
        parts.append(grid[tuple(slice(0, s) for s in ss)].reshape(-1) + off)
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.int64)


def gather_slice(full_flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The submodel(s) ``full_flat[..., index]`` (a copy)."""
    return full_flat[..., index.to(full_flat.device)]


def scatter_slice(full_flat: torch.Tensor, index: torch.Tensor, sub_flat: torch.Tensor
                  ) -> torch.Tensor:
    """A copy of ``full_flat`` with the submodel ``sub_flat`` written into its slice."""
    out = full_flat.clone()
    out[..., index.to(full_flat.device)] = sub_flat
    return out
