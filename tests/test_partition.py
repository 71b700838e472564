import numpy as np
import pytest
import torch

from fedweave.config import DataConfig
from fedweave.data.partition import label_counts, partition, split_validation
from fedweave.errors import UserError

LABELS = torch.from_numpy(np.random.default_rng(0).integers(0, 10, 5000))


def check_disjoint_complete(shards, n):
    allidx = torch.cat(shards)
    assert len(allidx) == len(allidx.unique()), "shards overlap"
    assert sorted(allidx.tolist()) == list(range(n)), "shards do not cover the data"


@pytest.mark.parametrize("kind,extra", [
    ("iid", {}), ("dirichlet", {"alpha": 0.3}), ("shards", {"shards_per_node": 2}),
    ("quantity", {"sigma": 1.0}), ("classes", {"classes_per_node": 10}),
])
def test_disjoint_complete_deterministic(kind, extra):
    cfg = DataConfig(nodes=8, partition=kind, **extra)
    a = partition(LABELS, cfg, seed=3)
    check_disjoint_complete(a, len(LABELS))
    b = partition(LABELS, cfg, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    c = partition(LABELS, cfg, seed=4)
    assert any(not torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_classes_per_node_exact_shifted_window():
    cfg = DataConfig(nodes=8, partition="classes", classes_per_node=8)
    shards = partition(LABELS, cfg, seed=0)
    counts = label_counts(LABELS, shards, 10)
    for node in range(8):
        held = set(torch.nonzero(counts[node]).flatten().tolist())
        assert held == {(node + j) % 10 for j in range(8)}
    # U(0.8, 1) shares: every holder of a class gets a comparable piece
    for c in range(10):
        held = counts[:, c][counts[:, c] > 0].double()
        assert held.max() / held.min() < 1.0 / 0.8 + 0.05


def test_large_alpha_close_to_iid_small_alpha_skewed():
    def skew(alpha):
        shards = partition(LABELS, DataConfig(nodes=10, alpha=alpha), seed=0)
        p = label_counts(LABELS, shards, 10).double()
        p = p / p.sum(1, keepdim=True)
        return (p - 0.1).abs().sum(1).mean().item()  # mean L1 distance to uniform labels
    assert skew(1000.0) < 0.1
    assert skew(0.1) > 0.8


def test_dirichlet_min_samples_and_impossible():
    shards = partition(LABELS, DataConfig(nodes=20, alpha=0.1, min_samples=20), seed=0)
    assert min(len(s) for s in shards) >= 20
    with pytest.raises(UserError, match=r"data\.nodes"):
        partition(LABELS[:50], DataConfig(nodes=100), seed=0)
    with pytest.raises(UserError, match="alpha"):
        partition(LABELS, DataConfig(nodes=50, alpha=0.001, min_samples=90), seed=0)


def test_natural_needs_groups():
    with pytest.raises(UserError, match="natural"):
        partition(LABELS, DataConfig(nodes=4, partition="natural"), seed=0)
    groups = torch.arange(len(LABELS)) % 7
    shards = partition(LABELS, DataConfig(nodes=7, partition="natural"), seed=0, groups=groups)
    assert [int(groups[s].unique().numel()) for s in shards] == [1] * 7


def test_validation_split():
    shards = partition(LABELS, DataConfig(nodes=4, partition="iid"), seed=0)
    train, val = split_validation(shards, 0.1, seed=0)
    for s, t, v in zip(shards, train, val, strict=True):
        assert len(v) == round(0.1 * len(s))
        assert set(t.tolist()) | set(v.tolist()) == set(s.tolist())
        assert not set(t.tolist()) & set(v.tolist())
    train2, val2 = split_validation(shards, 0.1, seed=0, from_train=True)
    assert all(torch.equal(a, b) for a, b in zip(train2, val2, strict=True))
