"""``el2n`` (Paul et al., NeurIPS 2021, "Deep Learning on a Data Diet"): the error L2-norm

    EL2N(z) = E_runs ‖softmax(f(x; θ_e)) − onehot(y)‖₂

early in training (θ_e after ``influence.el2n.epochs`` rounds, default ⌈rounds/10⌉), averaged
over ``influence.el2n.runs`` independent short runs of the same config: the same partition and
corruption, another initialisation and batch order from (seed, "el2n", run).

``scores.csv`` holds **score = −EL2N**, fedweave's one orientation (higher = more helpful to
keep): a sample the early models already fit (small error) ranks above a hard one, and a
mislabeled sample — the largest errors under label noise — ranks least helpful, as every
influence scorer ranks it. The paper's own recipe keeps the *hardest* samples (the highest
EL2N; half of CIFAR-10 prunes without loss on clean labels): that is ``--keep lowest`` here.
"""

from __future__ import annotations

import math

import torch

from fedweave.influence.base import ScoredRun, Scorer, Scores, register_scorer
from fedweave.rng import derive_seed


def short_run(run: ScoredRun, k: int, purpose: str, rounds: int
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Final models of the run's config trained for ``rounds`` rounds from the seed
    (seed, purpose, k), on the run's own partition."""
    from fedweave.runner import Runner

    seed = derive_seed(run.config.seed, purpose, k)
    cfg = run.config.model_copy(update={"seed": seed, "rounds": rounds})
    cfg.output = cfg.output.model_copy(update={"eval_every": rounds, "plots": False,
                                               "checkpoint_every": 0})
    runner = Runner(cfg, None, data=run.replace_seed(seed), backend=run.ctx.backend)
    for r in range(rounds):
        runner.algo.round(r)
    params, buffers, _ = runner.algo.models()
    return params.detach(), buffers


def error_norms(run: ScoredRun, params: torch.Tensor, buffers: dict[str, torch.Tensor]
                ) -> list[torch.Tensor]:
    """Per node: ‖softmax(f(x)) − onehot(y)‖₂ of each of its training samples."""
    out = []
    for j in range(run.data.nodes):
        theta, b = run.model_of(params, buffers, j)
        x, y = run.train(j)
        p = torch.softmax(run.probe.logits(theta, b, x).double(), 1)
        onehot = torch.nn.functional.one_hot(y, run.data.num_classes).double()
        out.append((p - onehot).norm(dim=1).cpu())
    return out


@register_scorer("el2n")
class EL2N(Scorer):
    def score(self, run: ScoredRun) -> Scores:
        opts = run.config.influence.el2n
        epochs = opts.epochs or math.ceil(run.config.rounds / 10)
        totals = [torch.zeros(len(s), dtype=torch.float64) for s in run.data.train_idx]
        for k in range(opts.runs):
            params, buffers = short_run(run, k, "el2n", epochs)
            for j, e in enumerate(error_norms(run, params, buffers)):
                totals[j] += e / opts.runs
        return Scores.per_node(run.data, [-t for t in totals],
                               {"runs": opts.runs, "epochs": epochs, "score": "-EL2N"})
