"""20% flipped labels on digits: under the one orientation of ``scores.csv`` (higher = more
helpful to keep) every scorer — the influence scores and the negated difficulty scores EL2N and
forgetting alike — ranks the flipped samples as least helpful (AUROC of "low score ⇒ flipped",
and their mean rank within their node in the bottom part); random is at chance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sklearn.metrics import roc_auc_score

from fedweave.influence import SCORERS, ScoredRun
from fedweave.plugins import load_config
from fedweave.runner import run

NOISY = ["algorithm.name=dsgd", "topology.name=ring", "model.name=mlp", "model.hidden=[32]",
         "data.nodes=4", "data.partition=iid", "data.label_noise=0.2", "rounds=6",
         "train.lr=0.1", "output.keep=all", "output.plots=false", "output.progress=false",
         "engine.name=loop", "influence.el2n.runs=2"]


@pytest.fixture(scope="module")
def noisy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[ScoredRun, torch.Tensor]:
    res = run(load_config(None, [*NOISY, f"output.dir={tmp_path_factory.mktemp('noise')}"]))
    flipped = json.loads((Path(res.run_dir) / "label_noise.json").read_text())["indices"]
    sr = ScoredRun.open(Path(res.run_dir))
    assert len(flipped) == sum(-(-len(s) * 2 // 10) for s in sr.data.train_idx)  # ⌈0.2 n_i⌉
    return sr, torch.tensor(flipped)


def auroc_low_is_flipped(sr: ScoredRun, name: str, flipped: torch.Tensor) -> float:
    scores = SCORERS.get(name)().score(sr)
    is_flipped = torch.isin(scores.index, flipped).numpy()
    finite = torch.nan_to_num(scores.score, posinf=1e30, neginf=-1e30).numpy()
    return float(roc_auc_score(is_flipped, -finite))


def flipped_mean_rank(sr: ScoredRun, name: str, flipped: torch.Tensor) -> float:
    """Mean over flipped samples of their rank within their node, 0 = least helpful, 1 = most
    (ties share their mean rank)."""
    from scipy.stats import rankdata

    scores = SCORERS.get(name)().score(sr)
    ranks = []
    for j in range(sr.data.nodes):
        mine = scores.node == j
        values = torch.nan_to_num(scores.score[mine], posinf=1e30, neginf=-1e30).numpy()
        rank = (rankdata(values) - 1) / max(len(values) - 1, 1)
        hit = torch.isin(scores.index[mine], flipped).numpy()
        ranks += rank[hit].tolist()
    return float(sum(ranks) / len(ranks))


@pytest.mark.parametrize("name", ["if_ekfac", "tracin", "dice", "el2n", "forgetting"])
def test_every_scorer_ranks_flipped_labels_least_helpful(noisy_run, name) -> None:
    sr, flipped = noisy_run
    auc = auroc_low_is_flipped(sr, name, flipped)
    rank = flipped_mean_rank(sr, name, flipped)
    print(f"{name}: AUROC(low score ⇒ flipped) = {auc:.3f}, flipped mean rank {rank:.3f}")
    assert auc >= 0.8
    assert rank <= 0.3  # the bottom part of every node's ranking (chance: 0.5)


def test_random_is_at_chance(noisy_run) -> None:
    sr, flipped = noisy_run
    auc = auroc_low_is_flipped(sr, "random", flipped)
    rank = flipped_mean_rank(sr, "random", flipped)
    print(f"random: AUROC = {auc:.3f}, flipped mean rank {rank:.3f}")
    assert abs(auc - 0.5) < 0.1
    assert abs(rank - 0.5) < 0.1
