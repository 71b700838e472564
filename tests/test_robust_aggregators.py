"""Robust aggregation rules: each equals its definition on hand-made inputs, the batched and
masked form equals the rule on each group alone, and with f attackers sending huge vectors the
robust rules stay within the honest range while the mean does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import trim_mean

from fedweave.aggregators import AGGREGATORS, Aggregator, krum_scores
from fedweave.config import AGGREGATOR_CONFIGS
from fedweave.errors import UserError
from fedweave.plugins import load_builtins

load_builtins()


def rule(name: str, **keys: object) -> Aggregator:
    return AGGREGATORS.get(name)(AGGREGATOR_CONFIGS.resolve({"name": name, **keys}))  # type: ignore[arg-type]


ROWS = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0], [100.0, -100.0]])
W = torch.tensor([1.0, 1.0, 2.0, 0.0])
C = torch.zeros(2)


def test_each_rule_equals_its_definition_on_hand_made_rows() -> None:
    assert torch.allclose(rule("mean")(ROWS, W, C), torch.tensor([27.25, -22.75]))
    assert torch.allclose(rule("weighted_mean")(ROWS, W, C), torch.tensor([14 / 4, 10 / 4]))
    # median of 4 values: the mean of the two middle ones
    assert torch.allclose(rule("median")(ROWS, W, C), torch.tensor([4.0, 1.5]))
    # β = 0.25 of 4 rows: drop one value at each end per coordinate
    assert torch.allclose(rule("trimmed_mean", beta=0.25)(ROWS, W, C), torch.tensor([4.0, 1.5]))
    # Krum f=1: each row's 4-1-2 = 1 nearest squared distance: 17, 20, 17, huge -> row 0
    assert torch.equal(rule("krum", f=1)(ROWS, W, C), ROWS[0])
    assert torch.allclose(krum_scores(ROWS[None], None, 1)[0, :3], torch.tensor([17.0, 20, 17]))
    assert torch.allclose(rule("multi_krum", f=1, m=2)(ROWS, W, C), (ROWS[0] + ROWS[2]) / 2)
    # norm clip τ=1 around 0, then the weighted mean (the last row has weight 0)
    unit = ROWS / ROWS.norm(dim=1, keepdim=True)
    assert torch.allclose(rule("norm_clip", tau=1.0)(ROWS, W, C), (W[:, None] * unit).sum(0) / 4)
    # centered clip, one iteration from 0 with τ=1 is the same as norm clip
    assert torch.allclose(rule("centered_clip", tau=1.0)(ROWS, W, C),
                          rule("norm_clip", tau=1.0)(ROWS, W, C))
    # two iterations: v1 as above, v2 = v1 + Σ w̄ clip(x − v1)
    v1 = (W[:, None] * unit).sum(0) / 4
    d = ROWS - v1
    v2 = v1 + (W[:, None] * d * (1 / d.norm(dim=1, keepdim=True)).clamp(max=1)).sum(0) / 4
    assert torch.allclose(rule("centered_clip", tau=1.0, iterations=2)(ROWS, W, C), v2)


@pytest.mark.parametrize("k", [5, 6, 11])
def test_median_and_trimmed_mean_match_numpy_and_scipy(k: int) -> None:
    rows = torch.randn(k, 7, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    w, c = torch.ones(k, dtype=torch.float64), torch.zeros(7, dtype=torch.float64)
    assert np.allclose(rule("median")(rows, w, c).numpy(), np.median(rows.numpy(), axis=0))
    for beta in (0.0, 0.1, 0.2, 0.4):
        ours = rule("trimmed_mean", beta=beta)(rows, w, c).numpy()
        assert np.allclose(ours, trim_mean(rows.numpy(), beta, axis=0)), beta


@pytest.mark.parametrize("name,keys", [("mean", {}), ("weighted_mean", {}), ("median", {}),
                                       ("trimmed_mean", {"beta": 0.3}), ("krum", {"f": 1}),
                                       ("multi_krum", {"f": 1, "m": 3}),
                                       ("centered_clip", {"tau": 0.5, "iterations": 3}),
                                       ("norm_clip", {"tau": 0.5})])
def test_masked_groups_equal_each_group_alone(name: str, keys: dict[str, object]) -> None:
    gen = torch.Generator().manual_seed(1)
    rows = torch.randn(3, 6, 4, generator=gen, dtype=torch.float64)
    w = torch.rand(3, 6, generator=gen, dtype=torch.float64) + 0.1
    center = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    valid = torch.tensor([[True] * 6, [True, False, True, True, False, True],
                          [False, True, True, True, True, False]])
    agg = rule(name, **keys)
    batched = agg.combine(rows, w, center, valid)
    for g in range(3):
        alone = agg.single(rows[g][valid[g]], w[g][valid[g]], center[g])
        assert torch.allclose(batched[g], alone), (name, g)


@pytest.mark.parametrize("f", [1, 3])
def test_huge_attacker_vectors_stay_outside_robust_rules_but_move_the_mean(f: int) -> None:
    gen = torch.Generator().manual_seed(f)
    honest = torch.rand(10, 50, generator=gen)
    rows = torch.cat([honest, torch.full((f, 50), 1e6)])
    w, c = torch.ones(len(rows)), torch.zeros(50)
    lo, hi = honest.min(0).values, honest.max(0).values
    for name, keys in (("median", {}), ("trimmed_mean", {"beta": 0.25}), ("krum", {"f": f}),
                       ("multi_krum", {"f": f, "m": 4})):
        out = rule(name, **keys)(rows, w, c)
        assert bool(((out >= lo) & (out <= hi)).all()), name
    assert bool((rule("mean")(rows, w, c) > hi).all())
    assert float(rule("norm_clip", tau=1.0)(rows, w, c).norm()) <= 1.0 + 1e-5


def test_non_finite_rows_are_rejected_and_counted() -> None:
    rows = torch.cat([ROWS[:3], torch.full((1, 2), float("nan"))])
    agg = rule("mean")
    assert torch.allclose(agg(rows, W, C), ROWS[:3].mean(0)) and agg.rejected == 1
    nan = torch.full((2, 2), float("nan"))  # nothing finite: the model stays at the center
    assert torch.equal(agg(nan, W[:2], C), C) and agg.rejected == 3


def test_krum_needs_enough_rows_and_says_so() -> None:
    with pytest.raises(UserError, match="at least 5 rows"):
        rule("krum", f=2).check_rows(4, "a cohort of 4")
    with pytest.raises(UserError, match=r"aggregator.beta"):
        from fedweave.plugins import load_config

        load_config(None, ["aggregator.name=trimmed_mean", "aggregator.beta=0.5"])
