"""Which EK-FAC to use (issue 13): fedweave's own ``if_ekfac`` and, when it is importable,
dattri's ``IFAttributorEKFAC``, against the exact inverse-Hessian influence (``if_exact``) on a
small logistic regression (digits, one node, 280 training samples, full-batch GD to the optimum
of mean CE + ½·0.2‖θ‖²; the last — only — linear layer has a bias).

    python benchmarks/influence_ekfac_libraries.py

dattri is not a fedweave dependency: install it in a scratch environment beside the CPU torch,
``python -m venv --system-site-packages /tmp/v && /tmp/v/bin/pip install --no-deps dattri tqdm``,
and run this script with that interpreter. Scores are compared by Spearman and Pearson
correlation (dattri's scale and sign convention differ; its sign is aligned first) and, for
fedweave's own, by relative error.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr

from fedweave.influence import SCORERS, ScoredRun
from fedweave.plugins import load_config
from fedweave.runner import run

CONFIG = ["algorithm.name=centralized", "model.name=logistic", "data.nodes=1",
          "data.train_samples=400", "data.val_fraction=0.3", "train.batch_size=1000",
          "train.lr=0.35", "train.l2_lambda=0.2", "rounds=200", "output.eval_every=200",
          "output.plots=false", "output.progress=false", "engine.name=loop"]


def dattri_scores(sr: ScoredRun, damping: float) -> torch.Tensor:
    from dattri.algorithm.influence_function import IFAttributorEKFAC
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    params, _ = sr.final_models()
    model = sr.ctx.model
    model.load_state_dict({k: v.clone() for k, v in sr.ctx.layout.views(params[0]).items()},
                          strict=False)

    def loss(p: dict[str, torch.Tensor], batch: Any) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)

    task = AttributionTask(loss_func=loss, model=model,
                           checkpoints=dict(model.named_parameters()))
    attributor = IFAttributorEKFAC(task=task, damping=damping)
    x, y = sr.train(0)
    xv, yv = sr.validation(0)
    train = DataLoader(TensorDataset(x, y), batch_size=len(y))
    attributor.cache(train)
    scores = attributor.attribute(train, DataLoader(TensorDataset(xv, yv), batch_size=len(yv)))
    return scores.detach().mean(1).double()


def compare(a: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    sign = 1.0 if pearsonr(a, ref)[0] >= 0 else -1.0
    return {"spearman": float(spearmanr(sign * a, ref)[0]),
            "pearson": float(pearsonr(sign * a, ref)[0]),
            "relative_error": float((a - ref).norm() / ref.norm())}


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        res = run(load_config(None, [*CONFIG, f"output.dir={tmp}"]))
        sr = ScoredRun.open(Path(res.run_dir))  # type: ignore[arg-type]
        exact = SCORERS.get("if_exact")().score(sr).score
        report: dict[str, Any] = {"samples": len(exact)}
        for fisher in ("expected", "sampled", "empirical"):
            sr.config.influence.fisher = fisher  # type: ignore[assignment]
            report[f"fedweave if_ekfac (fisher={fisher})"] = compare(
                SCORERS.get("if_ekfac")().score(sr).score, exact)
        try:
            report["dattri IFAttributorEKFAC (true labels)"] = compare(
                dattri_scores(sr, sr.config.train.l2_lambda), exact)
        except ImportError as exc:
            report["dattri"] = f"not importable ({exc.name})"
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
