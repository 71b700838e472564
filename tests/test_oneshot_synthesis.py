"""DeepInversion on trained teachers: the images match the teachers' BatchNorm statistics and
convince the teachers; the returned iterate is the lowest-loss one; batches are the same in
any group; sampling DeepInversion copes with teachers that lack classes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fedweave.algorithms.oneshot.deepinversion import (
    Inversion,
    InversionSettings,
    Teachers,
    batch_noise,
    batch_quality,
)
from fedweave.config import ModelConfig
from fedweave.core.population import ParamLayout, flat_params, model_buffers
from fedweave.data.federated import build_federated_data
from fedweave.models import build_model
from fedweave.plugins import load_config

MODEL = ModelConfig(name="cnn", norm="batch", width=0.5)


@pytest.fixture(scope="module")
def teachers() -> Teachers:
    """Two BatchNorm CNN teachers on digits: one on classes 0-4 only, one on every class."""
    data = build_federated_data(load_config(None, ["data.partition=iid", "data.nodes=1"]).data,
                                0)
    x, y = data.features(data.x), data.y
    params, buffers, masks = [], [], []
    for t, classes in enumerate((range(5), range(10))):
        keep = torch.isin(y, torch.tensor(list(classes)))
        torch.manual_seed(t)
        model = build_model(MODEL, data.input_shape, 10)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        xs, ys = x[keep], y[keep]
        for epoch in range(5):
            perm = torch.randperm(len(ys), generator=torch.Generator().manual_seed(epoch))
            for i in range(0, len(ys), 64):
                b = perm[i: i + 64]
                loss = F.cross_entropy(model(xs[b]), ys[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        params.append(flat_params(model))
        buffers.append(model_buffers(model))
        masks.append(torch.isin(torch.arange(10), torch.tensor(list(classes))))
    template = build_model(MODEL, data.input_shape, 10)
    layout = ParamLayout.of(template)
    mask = torch.stack(masks)
    return Teachers(template, layout.views(torch.stack(params)),
                    {k: torch.stack([b[k] for b in buffers]) for k in buffers[0]}, mask,
                    mask.float() / mask.float().sum(1, keepdim=True))


SETTINGS = InversionSettings(lr=0.1, iterations=150, tv=1e-3, l2=0.0, bn=10.0, competition=0.0)


def test_synthesis_lowers_the_bn_term_and_raises_teacher_confidence(teachers: Teachers
                                                                   ) -> None:
    inv = Inversion(teachers, SETTINGS, (1, 8, 8), 64, seed=0)
    out = inv.run([0, 1])  # batch 0 for teacher 0 (classes 0-4), batch 1 for teacher 1
    assert out.labels[0].max() <= 4 and out.labels[1].max() >= 5
    who = torch.tensor([0, 1])
    start = torch.stack([batch_noise(0, b, (64, 1, 8, 8)) for b in (0, 1)])
    before = batch_quality(teachers, start, out.labels, who)
    after = batch_quality(teachers, out.images, out.labels, who)
    assert (after["bn"] < 0.5 * before["bn"]).all(), (before["bn"], after["bn"])
    assert (after["confidence"] > 0.5).all() and (before["confidence"] < 0.3).all()
    assert (after["confidence"] > 2 * before["confidence"]).all()
    assert (after["accuracy"] > 0.6).all()
    assert (after["accuracy"] > before["accuracy"] + 0.3).all()


def test_the_lowest_loss_iterate_is_returned_not_the_last(teachers: Teachers) -> None:
    wild = InversionSettings(lr=50.0, iterations=5, tv=1e-3, l2=0.0, bn=10.0, competition=0.0,
                             jitter=0)
    out = Inversion(teachers, wild, (1, 8, 8), 32, seed=0).run([3])
    # Adam's first steps of size 50 wreck the batch: the best iterate is the starting noise
    assert torch.equal(out.images[0], batch_noise(0, 3, (32, 1, 8, 8)))


def test_a_batch_is_the_same_alone_or_in_a_group_and_adam_is_fresh_per_batch(
        teachers: Teachers) -> None:
    short = InversionSettings(**{**SETTINGS.__dict__, "iterations": 10})
    inv = Inversion(teachers, short, (1, 8, 8), 32, seed=0)
    alone = inv.run([1])
    inv.run([2])  # another batch in between changes nothing
    grouped = inv.run([0, 1])
    assert torch.allclose(alone.images[0], grouped.images[1], atol=1e-4)
    assert torch.equal(inv.run([1]).images, alone.images)


def test_adaptive_synthesis_competes_with_the_student(teachers: Teachers) -> None:
    student = build_model(MODEL, (1, 8, 8), 10)
    adi = InversionSettings(**{**SETTINGS.__dict__, "iterations": 10, "competition": 10.0})
    plain = Inversion(teachers, InversionSettings(**{**adi.__dict__, "competition": 0.0}),
                      (1, 8, 8), 32, 0).run([1], student)
    comp = Inversion(teachers, adi, (1, 8, 8), 32, 0).run([1], student)
    assert not torch.allclose(plain.images, comp.images)
    assert student.training  # left as it was


def test_sampling_inversion_weights_ce_by_class_frequency_and_handles_missing_classes(
        teachers: Teachers) -> None:
    sampling = InversionSettings(**{**SETTINGS.__dict__, "iterations": 20, "sampling": 2,
                                    "competition": 10.0})
    inv = Inversion(teachers, sampling, (1, 8, 8), 64, seed=0)
    out = inv.run([0, 1], build_model(MODEL, (1, 8, 8), 10))
    assert out.teachers == [[0, 1], [0, 1]]
    assert out.labels.max() >= 5  # labels over every class, also those teacher 0 lacks
    assert torch.isfinite(out.loss).all()
    # teacher 0 never saw classes 5-9: their samples carry weight 0 in its cross-entropy
    x = out.images[:1]
    terms = inv.group_loss(x, out.labels[:1], torch.tensor([0]), torch.tensor([0]),
                           torch.tensor([1.0]))
    logits = teachers.logits(x[0])[0]
    y = out.labels[0]
    known = y < 5
    want = F.cross_entropy(logits[known], y[known])  # freq is uniform over classes 0-4
    assert float(terms["ce"][0]) == pytest.approx(float(want), rel=1e-4)
