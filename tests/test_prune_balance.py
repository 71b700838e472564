"""Class-balanced pruning (``data.prune.balance: class``, the default): the ratio holds within
each class of every node, rounded by largest remainder; ``balance: none`` keeps the node's best
scores whatever their class and names the node and class it removes in one warning."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import pytest
import torch

from fedweave.config import PruneConfig
from fedweave.data.prune import class_quotas, kept_count, prune_shards


def write_scores(path: Path, shards: list[torch.Tensor], score: torch.Tensor) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["node", "index", "score"])
        for j, shard in enumerate(shards):
            for i in shard.tolist():
                w.writerow([j, i, repr(float(score[i]))])
    return path


@pytest.fixture
def two_nodes(tmp_path: Path) -> tuple[list[torch.Tensor], torch.Tensor, Path]:
    """Node 0: classes 0/1/2 with 10/7/3 samples; node 1: classes 0/3 with 6/14. Scores rank
    class 2 (node 0) and class 0 (node 1) lowest, so an unbalanced cut removes them."""
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 3 + [0] * 6 + [3] * 14)
    shards = [torch.arange(0, 20), torch.arange(20, 40)]
    gen = torch.Generator().manual_seed(0)
    score = torch.rand(40, generator=gen, dtype=torch.float64)
    score[17:20] -= 5.0  # node 0's class 2
    score[20:26] -= 5.0  # node 1's class 0
    return shards, labels, write_scores(tmp_path / "scores.csv", shards, score)


@pytest.mark.parametrize("ratio", [0.9, 0.7, 0.5, 0.3])
def test_class_balance_holds_exactly_per_node(two_nodes, ratio: float, caplog) -> None:
    shards, labels, path = two_nodes
    kept = prune_shards(shards, PruneConfig(scores=path, ratio=ratio), labels)
    for shard, keep in zip(shards, kept, strict=True):
        assert len(keep) == kept_count(len(shard), ratio)  # the node's total is unchanged
        assert torch.equal(keep, keep.sort().values) and torch.isin(keep, shard).all()
        for c in labels[shard].unique().tolist():
            n_c = int((labels[shard] == c).sum())
            k_c = int((labels[keep] == c).sum())
            assert math.floor(ratio * n_c + 1e-9) <= k_c <= math.ceil(ratio * n_c - 1e-9)
            assert k_c >= 1  # every class here has ratio · n_c ≥ 0.9
    assert not [r for r in caplog.records if "loses class" in r.getMessage()]


def test_largest_remainder_rounding() -> None:
    # 0.5 · [10, 7, 3] = [5, 3.5, 1.5]: total ⌈10⌉ = 10; the tie of remainders goes to the
    # larger class (7)
    assert class_quotas(torch.tensor([10, 7, 3]), 0.5).tolist() == [5, 4, 1]
    # 0.3 · [6, 14] = [1.8, 4.2]: total 6 → [2, 4]
    assert class_quotas(torch.tensor([6, 14]), 0.3).tolist() == [2, 4]
    # a tiny ratio still keeps one sample (of the largest remainder)
    assert class_quotas(torch.tensor([2, 5]), 0.01).tolist() == [0, 1]


def test_within_a_class_the_best_scores_are_kept(two_nodes) -> None:
    shards, labels, path = two_nodes
    with open(path, newline="") as f:
        score = torch.tensor([float(r[2]) for r in list(csv.reader(f))[1:]])
    for keep_side in ("top", "lowest"):
        kept = prune_shards(shards, PruneConfig(scores=path, ratio=0.5, keep=keep_side), labels)
        for shard, keep in zip(shards, kept, strict=True):
            for c in labels[shard].unique().tolist():
                mine = shard[labels[shard] == c]
                chosen = keep[labels[keep] == c]
                rest = mine[~torch.isin(mine, chosen)]
                if len(rest) and len(chosen):
                    if keep_side == "top":
                        assert score[chosen].min() >= score[rest].max()
                    else:
                        assert score[chosen].max() <= score[rest].min()


def test_unbalanced_pruning_warns_naming_node_and_class(two_nodes, caplog) -> None:
    shards, labels, path = two_nodes
    with caplog.at_level(logging.WARNING, logger="fedweave"):
        kept = prune_shards(shards, PruneConfig(scores=path, ratio=0.5, balance="none"), labels)
    assert [len(k) for k in kept] == [10, 10]
    assert not (labels[kept[0]] == 2).any() and not (labels[kept[1]] == 0).any()
    lines = [r.getMessage() for r in caplog.records if "loses class" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "node 0 loses class 2" in lines[0] and "node 1 loses class 0" in lines[0]
    caplog.clear()  # once per process and scores file: stage 2 builds its data twice
    prune_shards(shards, PruneConfig(scores=path, ratio=0.5, balance="none"), labels)
    assert not [r for r in caplog.records if "loses class" in r.getMessage()]


def test_ratio_one_keeps_every_sample_in_shard_order(two_nodes) -> None:
    shards, labels, path = two_nodes
    for balance in ("class", "none"):
        kept = prune_shards(shards, PruneConfig(scores=path, ratio=1.0, balance=balance), labels)
        assert all(torch.equal(a, b) for a, b in zip(kept, shards, strict=True))


def test_balanced_pruning_runs_end_to_end_on_digits(tmp_path: Path) -> None:
    """Through build_federated_data: a scores.csv that ranks one digit lowest everywhere
    removes it under balance none (warned) and keeps it at the ratio under balance class."""
    from fedweave.data.federated import build_federated_data
    from fedweave.plugins import load_config

    base = ["data.nodes=3", "data.partition=iid", "data.train_samples=300"]
    cfg = load_config(None, base)
    data = build_federated_data(cfg.data, cfg.seed)
    score = torch.rand(len(data.y), generator=torch.Generator().manual_seed(1),
                       dtype=torch.float64)
    score[data.y == 4] -= 5.0
    path = write_scores(tmp_path / "s.csv", data.train_idx, score)
    for balance in ("class", "none"):
        pruned = build_federated_data(load_config(None, [
            *base, f"data.prune.scores={path}", "data.prune.ratio=0.5",
            f"data.prune.balance={balance}"]).data, cfg.seed)
        for full, keep in zip(data.train_idx, pruned.train_idx, strict=True):
            n4, k4 = int((data.y[full] == 4).sum()), int((data.y[keep] == 4).sum())
            if balance == "none":
                assert k4 == 0
            else:
                assert k4 >= 1 and abs(k4 - n4 / 2) <= 1
