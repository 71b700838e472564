"""``random``: uniform scores from (seed, "influence-random") — the baseline every scorer is
compared against (its noisy-label AUROC is ≈ 0.5)."""

from __future__ import annotations

import torch

from fedweave.influence.base import ScoredRun, Scorer, Scores, register_scorer
from fedweave.rng import torch_generator


@register_scorer("random")
class RandomScorer(Scorer):
    def score(self, run: ScoredRun) -> Scores:
        gen = torch_generator(run.config.seed, "influence-random")
        values = [torch.rand(len(s), generator=gen, dtype=torch.float64)
                  for s in run.data.train_idx]
        return Scores.per_node(run.data, values)
