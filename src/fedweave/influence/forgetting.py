"""``forgetting`` (Toneva et al., ICLR 2019, "An Empirical Study of Example Forgetting during
Deep Neural Network Learning"): the number of forgetting events of each training sample —
transitions from correctly to incorrectly classified between consecutive kept checkpoints
(``output.keep: all``: every round), under its node's model (decentralized) or the global
model — and ∞ for a sample never classified correctly. Toneva et al. record the prediction
each time the sample is in a minibatch; checkpoints give the epoch-level version, which works
for federated runs too.

``scores.csv`` holds **score = −events** (−∞ for a sample never learned), fedweave's one
orientation (higher = more helpful to keep): an unforgettable sample ranks first, and the
mislabeled samples — forgotten often or never learned — rank least helpful, as every influence
scorer ranks them. The paper's own recipe drops the *unforgettable* samples and keeps the most
forgotten: that is ``--keep lowest`` here.
"""

from __future__ import annotations

import torch

from fedweave.errors import UserError
from fedweave.influence.base import ScoredRun, Scorer, Scores, register_scorer


@register_scorer("forgetting")
class Forgetting(Scorer):
    uses_checkpoints = True

    def score(self, run: ScoredRun) -> Scores:
        rounds = run.rounds()
        if len(rounds) < 2:
            raise UserError(f"forgetting needs checkpoints of several rounds; {run.path} kept "
                            f"{rounds or 'none'}: run it with output.keep=all (fedweave prune "
                            "keeps every checkpoint of stage 1)")
        n = run.data.nodes
        events = [torch.zeros(len(s), dtype=torch.float64) for s in run.data.train_idx]
        learned = [torch.zeros(len(s), dtype=torch.bool) for s in run.data.train_idx]
        before: list[torch.Tensor | None] = [None] * n
        for r in rounds:
            params, buffers = run.models_at(r)
            for j in range(n):
                theta, b = run.model_of(params, buffers, j)
                x, y = run.train(j)
                correct = (run.probe.logits(theta, b, x).argmax(1) == y).cpu()
                if before[j] is not None:
                    events[j] += (before[j] & ~correct).double()  # type: ignore[operator]
                learned[j] |= correct
                before[j] = correct
        for j in range(n):
            events[j][~learned[j]] = float("inf")
        return Scores.per_node(run.data, [-e for e in events],
                               {"checkpoints": rounds, "score": "-forgetting events"})
