"""DICE on a small MLP over a ring: the one-hop estimate against DICE-GT per batch, and the
cascade's hops decaying."""

from __future__ import annotations

import torch
from scipy.stats import spearmanr

from fedweave.influence.dice import DiceHook
from fedweave.plugins import load_config
from fedweave.runner import Runner

RING = ["algorithm.name=dsgd", "topology.name=ring", "model.name=mlp", "model.hidden=[32]",
        "data.nodes=5", "data.partition=iid", "rounds=1", "train.lr=0.1",
        "train.batch_size=16", "data.val_fraction=0.2", "output.plots=false",
        "output.progress=false", "engine.name=loop", "influence.validation=node",
        "influence.dice.hops=3", "influence.dice.ground_truth=true"]


def test_one_hop_estimate_tracks_ground_truth_and_hops_decay() -> None:
    hook = DiceHook()
    Runner(load_config(None, RING), None, [hook]).run()
    rows = hook.scores().batches
    assert len(rows) == 5 * hook.steps and hook.steps >= 15
    one_hop = torch.tensor([r["hop0"] + r["hop1"] for r in rows])
    gt = torch.tensor([r["gt"] for r in rows])
    rho = spearmanr(one_hop, gt)[0]
    print(f"DICE one-hop vs DICE-GT over {len(rows)} batches: Spearman {rho:.3f}")
    assert rho >= 0.9  # measured 0.984
    full = [r for r in rows if "hop3" in r]  # the last steps' cascades end with the run
    size = [torch.tensor([abs(r[f"hop{h}"]) for r in full]).mean() for h in range(4)]
    print("mean |hop h| contribution:", [f"{float(s):.4g}" for s in size])
    assert size[0] > size[1] > size[2] > size[3] > 0
    # a sample's score is the sum of its contributions; a batch's is the sum of its samples'
    totals = hook.scores()
    assert abs(float(totals.score.sum()) - sum(r["score"] for r in rows)) < 1e-6
