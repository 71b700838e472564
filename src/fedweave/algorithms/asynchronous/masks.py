"""PR-FL's nested submodels (PR-FL 1–2 and 6): importance, nested masks and the
residual split.

Masks are stored as one ``level`` per parameter: the lowest density rank whose submodel holds
it (ranks = the clients' distinct densities in ascending order; ``len(densities)`` = held by
none). The submodel of rank k is ``level ≤ k``, so masks are nested by construction, and the
residual piece k (what rank k adds to rank k − 1) is ``level == k``.
"""

from __future__ import annotations

import torch

from fedweave.core.population import ParamLayout


def prunable(layout: ParamLayout) -> torch.Tensor:
    """bool [P]: weights of conv and linear layers (tensors of ≥ 2 dims); biases and norm
    parameters are always sent."""
    out = torch.zeros(layout.total, dtype=torch.bool)
    for (_name, sl), shape in zip(layout.layer_slices(), layout.shapes, strict=True):
        if len(shape) >= 2:
            out[sl] = True
    return out


def nested_levels(x: torch.Tensor, layout: ParamLayout, importance: torch.Tensor,
                  densities: list[float], base_density: float,
                  cost: torch.Tensor | None = None) -> torch.Tensor:
    """int16 [P] levels of the nested submodels for ascending ``densities`` (fractions of the
    prunable weights):

    1. base kernel: in every prunable layer the n_l − ⌊(1 − base_density)·n_l⌋ weights of
       largest |x| (magnitude pruning; PruneFL/PR-FL ``prune_by_pct``) get level 0, as do all
       non-prunable parameters;
    2. the other prunable weights are ranked globally by importance (÷ the per-parameter
       ``cost`` when given), ties by |x| then position;
    3. rank k takes the next max(0, ⌊ρ_k·N⌋ − held so far) of that ranking (N = prunable
       count), so its submodel holds ⌊ρ_k·N⌋ prunable weights (at least the base kernel).
    """
    level = torch.full((layout.total,), len(densities), dtype=torch.int16)
    mask = prunable(layout)
    level[~mask] = 0
    mag = x.detach().abs().cpu()
    for (_name, sl), shape in zip(layout.layer_slices(), layout.shapes, strict=True):
        if len(shape) < 2:
            continue
        n = sl.stop - sl.start
        keep = n - int((1 - base_density) * n)
        top = torch.topk(mag[sl], keep, sorted=False).indices + sl.start
        level[top] = 0
    candidates = torch.nonzero(level == len(densities)).flatten()
    score = importance.detach().cpu().double()[candidates]
    if cost is not None:
        score = score / cost[candidates]
    by_mag = torch.sort(-mag[candidates].double(), stable=True).indices
    order = by_mag[torch.sort(-score[by_mag], stable=True).indices]
    ranked = candidates[order]
    total = int(mask.sum())
    held = total - len(candidates)
    start = 0
    for k, rho in enumerate(densities):
        take = max(0, int(rho * total) - held)
        level[ranked[start: start + take]] = k
        start += take
        held += take
    return level


def submodel_mask(level: torch.Tensor, rank: int) -> torch.Tensor:
    """bool [P]: the submodel of ``rank`` (``level ≤ rank``)."""
    return level <= rank


def residual_pieces(x: torch.Tensor, level: torch.Tensor, ranks: int
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The residual split: piece 0 is the smallest submodel, piece k what rank k adds to rank
    k − 1, as (indices, values of ``x``). A client at rank k downloads pieces 0..k."""
    out = []
    for k in range(ranks):
        idx = torch.nonzero(level == k).flatten()
        out.append((idx, x[idx.to(x.device)]))
    return out


def reconstruct(pieces: list[tuple[torch.Tensor, torch.Tensor]], p: int) -> torch.Tensor:
    """The submodel that pieces 0..k make (zeros elsewhere)."""
    out = torch.zeros(p, dtype=pieces[0][1].dtype if pieces else torch.float32)
    for idx, values in pieces:
        out[idx] = values.cpu()
    return out


class Importance:
    """Accumulated importance reports: each report r (squared gradient × samples at the
    positions the client holds) is min-max normalised, (r − min r)/(max r − min r), and added;
    ``value`` is the mean over the reports that held each position (PR-FL's accumulate)."""

    def __init__(self, p: int) -> None:
        self.sum = torch.zeros(p, dtype=torch.float64)
        self.count = torch.zeros(p, dtype=torch.float64)

    def add(self, report: torch.Tensor, held: torch.Tensor) -> None:
        values = report.detach().cpu().double()[held]
        if values.numel() == 0:
            return
        lo, hi = values.min(), values.max()
        norm = (values - lo) / (hi - lo) if hi > lo else torch.zeros_like(values)
        self.sum[held] += norm
        self.count[held] += 1

    def value(self) -> torch.Tensor:
        return self.sum / self.count.clamp(min=1)

    def reset(self) -> None:
        self.sum.zero_()
        self.count.zero_()
