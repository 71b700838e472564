"""20% flipped labels on digits: every influence scorer ranks the flipped samples as least
helpful (AUROC of "low score ⇒ flipped"); the difficulty scores (EL2N, forgetting), which keep
the hardest samples as their papers do, rank them hardest; random is at chance."""

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
    finite = torch.nan_to_num(scores.score, posinf=1e30).numpy()
    return float(roc_auc_score(is_flipped, -finite))


@pytest.mark.parametrize("name", ["if_ekfac", "tracin", "dice"])
def test_influence_scores_rank_flipped_labels_least_helpful(noisy_run, name) -> None:
    sr, flipped = noisy_run
    auc = auroc_low_is_flipped(sr, name, flipped)
    print(f"{name}: AUROC(low score ⇒ flipped) = {auc:.3f}")
    assert auc >= 0.8


@pytest.mark.parametrize("name", ["el2n", "forgetting"])
def test_difficulty_scores_rank_flipped_labels_hardest(noisy_run, name) -> None:
    sr, flipped = noisy_run
    auc = 1.0 - auroc_low_is_flipped(sr, name, flipped)
    print(f"{name}: AUROC(high score ⇒ flipped) = {auc:.3f}")
    assert auc >= 0.8


def test_random_is_at_chance(noisy_run) -> None:
    sr, flipped = noisy_run
    auc = auroc_low_is_flipped(sr, "random", flipped)
    print(f"random: AUROC = {auc:.3f}")
    assert abs(auc - 0.5) < 0.1
