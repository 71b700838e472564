"""``loo``: exact leave-one-out by retraining — the ground truth the other scorers estimate.

    score(z) = L_val(θ_{−z}) − L_val(θ)

where θ_{−z} is the run's config trained again without z in its node's shard (everything else
identical: seeds, initialisation, the other nodes' batches) and L_val the mean over the
evaluated models of their validation loss (``ScoredRun.validation_loss``). One retraining per
training sample: for tiny problems. Note that a shard of n−1 samples has another batch order
than one of n, so with minibatches the score also carries SGD noise; full-batch training of a
strongly convex model (logistic regression with an L2 term) makes it the exact quantity that
influence functions approximate.
"""

from __future__ import annotations

import dataclasses

import torch

from fedweave.influence.base import ScoredRun, Scorer, Scores, register_scorer


def retrain(run: ScoredRun, train_idx: list[torch.Tensor]) -> float:
    """Validation loss of the run's config trained on ``train_idx``."""
    from fedweave.runner import build_algorithm

    data = dataclasses.replace(run.data, train_idx=train_idx)
    algo = build_algorithm(run.with_data(data))
    for r in range(run.config.rounds):
        algo.round(r)
    params, buffers, _ = algo.models()
    return run.validation_loss(params.detach(), buffers)


@register_scorer("loo")
class LeaveOneOut(Scorer):
    def score(self, run: ScoredRun) -> Scores:
        shards = run.data.train_idx
        full = retrain(run, shards)
        values = []
        for j, shard in enumerate(shards):
            out = torch.zeros(len(shard), dtype=torch.float64)
            for k in range(len(shard)):
                without = [s if i != j else torch.cat([s[:k], s[k + 1:]])
                           for i, s in enumerate(shards)]
                out[k] = retrain(run, without) - full
            values.append(out)
        return Scores.per_node(run.data, values, {"full_val_loss": full})
