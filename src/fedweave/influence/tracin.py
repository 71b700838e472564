"""``tracin`` — TracInCP (Pruthi et al., NeurIPS 2020, "Estimating Training Data Influence by
Tracing Gradient Descent"; reference system 000's "Delete"):

    score(z) = Σ_c w_c(j) · ⟨∇L_val(θ_c^j), ∇ℓ(z; θ_c^j)⟩,   z on node j,

over the run's kept checkpoints c (``output.keep: all`` keeps every round), θ_c^j = node j's
model (decentralized) or the global model at checkpoint c, L_val over the whole validation
split (``influence.validation``). w_c(j) = η_c · v_c(j) / b_j: the learning rate of the round
that ends at c times the number of times node j visited z since the previous kept checkpoint
(rounds × ``local_epochs``; in federated runs only the rounds where j was in the cohort, times
its aggregation share n_j / Σ_cohort n), per sample of its batch b_j — so a score is the
first-order change of validation loss had z been left out of its batches. The inner products
are one forward-mode pass per node and checkpoint (``Probe.sample_dots``): no per-sample
gradient matrix, no Python loop over samples.
"""

from __future__ import annotations

import torch

from fedweave.influence.base import ScoredRun, Scorer, Scores, register_scorer


def visit_weights(run: ScoredRun, first: int, last: int) -> torch.Tensor:
    """[N]: Σ over rounds first..last−1 (0-based) of each node's visits of one of its samples,
    times its aggregation share in federated rounds."""
    cfg = run.config
    sizes = run.data.sizes.double()
    out = torch.zeros(run.data.nodes, dtype=torch.float64)
    cohort = getattr(run.algorithm, "cohort", None)
    for r in range(first, last):
        if run.kind == "federated" and cohort is not None:
            members = cohort(r)
            share = sizes[members] / sizes[members].sum()
            out[members] += share
        else:
            out += 1.0
    return out * cfg.train.local_epochs


@register_scorer("tracin")
class TracIn(Scorer):
    uses_checkpoints = True

    def score(self, run: ScoredRun) -> Scores:
        rounds = run.rounds()
        if not rounds:
            run.final_models()  # raises the one-line error
        nodes, cfg = run.data.nodes, run.config
        batch = run.data.sizes.clamp(max=cfg.train.batch_size).double()
        totals = [torch.zeros(len(s), dtype=torch.float64) for s in run.data.train_idx]
        previous = 0
        for r in rounds:
            params, buffers = run.models_at(r)
            weight = run.ctx.lr(r - 1) * visit_weights(run, previous, r) / batch
            previous = r
            shared: torch.Tensor | None = None
            for j in range(nodes):
                theta, b = run.model_of(params, buffers, j)
                if shared is None or not (run.shared_validation() and run.kind != "decentralized"):
                    xv, yv = run.validation(j)
                    shared = run.probe.mean_grad(theta, b, xv, yv)
                x, y = run.train(j)
                totals[j] += float(weight[j]) * run.probe.sample_dots(theta, b, x, y, shared
                                                                      ).double().cpu()
        return Scores.per_node(run.data, totals, {"checkpoints": rounds})
