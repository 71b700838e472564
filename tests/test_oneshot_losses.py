"""DeepInversion's loss terms on tiny inputs equal hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fedweave.algorithms.oneshot.deepinversion import (
    bn_statistics,
    jensen_shannon,
    total_variation,
    weighted_cross_entropy,
)
from fedweave.config import SynthesisConfig
from fedweave.data.partition import heterogeneous


def test_total_variation_is_the_sum_of_four_difference_norms() -> None:
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # horizontal (0-1, 2-4), vertical (0-2, 1-4), anti-diagonal (2-1), diagonal (0-4)
    assert float(total_variation(x)) == pytest.approx(math.sqrt(5) + math.sqrt(13) + 1 + 4)
    # Frobenius norms over the whole batch, not per image
    two = torch.cat([x, 2 * x])
    assert float(total_variation(two)) == pytest.approx(
        math.sqrt(5 * 5) + math.sqrt(13 * 5) + math.sqrt(5) + math.sqrt(80))


def test_bn_statistics_use_the_biased_variance_over_n_h_w() -> None:
    # channel 0 holds 1, 3 (mean 2, biased variance 1); channel 1 holds 0, 4 (mean 2, var 4)
    x = torch.tensor([[[[1.0]], [[0.0]]], [[[3.0]], [[4.0]]]])
    value = bn_statistics(x, torch.zeros(2), torch.ones(2))
    assert float(value) == pytest.approx(math.hypot(0, 3) + math.hypot(2, 2))
    # spatial positions count like samples: one image with [1, 3] in a 1×2 map
    y = torch.tensor([[[[1.0, 3.0]]]])
    assert float(bn_statistics(y, torch.tensor([2.0]), torch.tensor([1.0]))) == pytest.approx(0)


def _js(p: list[float], q: list[float]) -> float:
    m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
    return 0.5 * sum(a * math.log(a / c) for a, c in zip(p, m, strict=True)) + 0.5 * sum(
        b * math.log(b / c) for b, c in zip(q, m, strict=True))


def test_jensen_shannon_matches_the_formula_and_the_seeds_reversed_form() -> None:
    p, q = [0.5, 0.5], [0.9, 0.1]
    lp, lq = torch.tensor([p]).log(), torch.tensor([q]).log()
    assert float(jensen_shannon(lp, lq, temperature=1.0)) == pytest.approx(_js(p, q), rel=1e-5)
    # the seed's "JS": 0.5 (KLDivLoss(log p, m) + KLDivLoss(log q, m)) = ½KL(m‖p) + ½KL(m‖q)
    kl = nn.KLDivLoss(reduction="batchmean")
    m = 0.5 * (torch.tensor([p]) + torch.tensor([q]))
    seed = 0.5 * (kl(torch.tensor([p]).log(), m) + kl(torch.tensor([q]).log(), m))
    reversed_kl = jensen_shannon(lp, lq, temperature=1.0, reversed_kl=True)
    assert float(reversed_kl) == pytest.approx(float(seed), rel=1e-5)
    assert float(reversed_kl) != pytest.approx(_js(p, q), rel=1e-3)


def test_jensen_shannon_temperature_clamp_and_class_mask() -> None:
    logits_p = torch.tensor([[2.0, -1.0, 0.5]])
    logits_q = torch.tensor([[0.0, 1.0, 7.0]])
    t = 3.0
    got = jensen_shannon(logits_p, logits_q, temperature=t,
                         mask=torch.tensor([True, True, False]))
    p = torch.softmax(logits_p[0, :2] / t, 0).tolist()
    q = torch.softmax(logits_q[0, :2] / t, 0).tolist()
    assert float(got) == pytest.approx(_js(p, q), rel=1e-5)  # the masked class is absent
    # probabilities are clamped to [0.01, 0.99] (p = 0.999 counts as 0.99)
    sharp = torch.tensor([[math.log(0.999), math.log(0.001)]])
    flat = torch.tensor([[0.0, 0.0]])
    m = [(0.999 + 0.5) / 2, (0.001 + 0.5) / 2]
    want = 0.5 * (0.99 * math.log(0.99 / m[0]) + 0.01 * math.log(0.01 / m[1])) + \
        0.5 * (0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1]))
    assert float(jensen_shannon(sharp, flat, temperature=1.0)) == pytest.approx(want, rel=1e-5)
    # averaged over the batch
    two = jensen_shannon(torch.cat([logits_p, logits_q]), torch.cat([logits_q, logits_p]), t)
    assert float(two) == pytest.approx(float(jensen_shannon(logits_p, logits_q, t)), rel=1e-6)


def test_weighted_cross_entropy_ignores_classes_a_teacher_never_saw() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0], [0.5, 0.0, 3.0], [0.0, 1.0, 1.0]])
    y = torch.tensor([0, 2, 1])
    w = torch.tensor([0.25, 0.75, 0.0])  # class 2 unseen: its sample does not count
    ce = [-torch.log_softmax(logits[i], 0)[y[i]].item() for i in range(3)]
    want = (0.25 * ce[0] + 0.75 * ce[2]) / (0.25 + 0.75)
    assert float(weighted_cross_entropy(logits, y, w)) == pytest.approx(want, rel=1e-6)
    torch_ce = nn.CrossEntropyLoss(weight=w)(logits, y)  # what the seed's criterion computes
    assert float(weighted_cross_entropy(logits, y, w)) == pytest.approx(float(torch_ce), rel=1e-6)
    # restricted to the teacher's classes: the softmax runs over classes 0 and 1 only
    mask = torch.tensor([True, True, False])
    masked = weighted_cross_entropy(logits[[0, 2]], y[[0, 2]], mask.float(), mask)
    sub = nn.functional.cross_entropy(logits[[0, 2], :2], y[[0, 2]])
    assert float(masked) == pytest.approx(float(sub), rel=1e-6)
    # no label with weight: 0, not NaN
    assert float(weighted_cross_entropy(logits[1:2], y[1:2], w)) == 0.0


def test_presets_are_the_seeds_and_keys_override_them() -> None:
    assert SynthesisConfig().resolved() == {"lr": 0.1, "iterations": 1000, "tv": 1e-3,
                                            "l2": 0.0, "bn": 10.0, "competition": 10.0}
    assert SynthesisConfig(preset="custom_more_iterations").resolved()["iterations"] == 3000
    assert SynthesisConfig(preset="paper").resolved() == {
        "lr": 0.05, "iterations": 2000, "tv": 2.5e-5, "l2": 3e-8, "bn": 10.0,
        "competition": 10.0}
    assert SynthesisConfig(preset="paper", lr=0.2).resolved()["lr"] == 0.2


class _Data:
    def __init__(self, unif: float, nodes: int) -> None:
        self.unif, self.nodes = unif, nodes


@pytest.mark.parametrize("unif", [0.0, 0.5, 1.0])
def test_heterogeneous_split_keeps_unif_uniform_and_sorts_the_rest(unif: float) -> None:
    y = np.repeat(np.arange(10), 100)
    shards = heterogeneous(y, _Data(unif, 5), np.random.default_rng(0), None)  # type: ignore
    assert sorted(np.concatenate(shards).tolist()) == list(range(1000))  # a partition
    assert [len(s) for s in shards] == [200] * 5
    labels = [np.unique(y[s]) for s in shards]
    if unif == 0.0:  # disjoint label ranges: node i holds classes 2i, 2i + 1
        assert [lab.tolist() for lab in labels] == [[2 * i, 2 * i + 1] for i in range(5)]
    if unif == 1.0:
        assert all(len(lab) == 10 for lab in labels)
    if unif == 0.5:  # 100 uniform samples each + a contiguous block of 100 sorted ones
        for i, s in enumerate(shards):
            counts = np.bincount(y[s], minlength=10)
            assert counts[2 * i] + counts[2 * i + 1] >= 100
    again = heterogeneous(y, _Data(unif, 5), np.random.default_rng(0), None)  # type: ignore
    assert all((a == b).all() for a, b in zip(shards, again, strict=True))
