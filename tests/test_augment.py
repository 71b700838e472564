"""Random crop + flip: shape, determinism, and that flips and shifts really happen."""

from __future__ import annotations

import torch

from fedweave.data.augment import random_crop_flip


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shape_dtype_and_determinism() -> None:
    x = torch.randint(0, 256, (64, 3, 16, 16), dtype=torch.uint8)
    a = random_crop_flip(x, gen(0))
    b = random_crop_flip(x, gen(0))
    assert a.shape == x.shape and a.dtype == torch.uint8 and torch.equal(a, b)
    assert not torch.equal(a, random_crop_flip(x, gen(1)))
    f = random_crop_flip(x.float(), gen(0))
    assert f.dtype == torch.float32 and torch.equal(f, a.float())


def test_identity_without_padding_or_flip() -> None:
    x = torch.randn(8, 2, 5, 7)
    assert torch.equal(random_crop_flip(x, gen(0), padding=0, flip=False), x)


def test_flip_only_mirrors_some_samples() -> None:
    x = torch.arange(32 * 4 * 4, dtype=torch.float32).reshape(32, 1, 4, 4)
    y = random_crop_flip(x, gen(3), padding=0)
    flipped = [bool(torch.equal(y[i], x[i].flip(-1))) for i in range(32)]
    same = [bool(torch.equal(y[i], x[i])) for i in range(32)]
    assert all(f or s for f, s in zip(flipped, same, strict=True))
    assert 4 < sum(flipped) < 28


def test_crop_shifts_content_with_zero_padding() -> None:
    x = torch.ones(64, 1, 8, 8)
    y = random_crop_flip(x, gen(5), padding=2, flip=False)
    zeros = (y == 0).flatten(1).sum(1)
    assert int(zeros.max()) > 0 and int(zeros.min()) == 0  # some shifted, some centred
    # every output is a shifted window: a single marked pixel moves by at most the padding
    m = torch.zeros(64, 1, 8, 8)
    m[:, 0, 4, 4] = 1
    z = random_crop_flip(m, gen(5), padding=2, flip=False)
    rows, cols = (z[:, 0] == 1).nonzero()[:, 1], (z[:, 0] == 1).nonzero()[:, 2]
    assert int((rows - 4).abs().max()) <= 2 and int((cols - 4).abs().max()) <= 2
    assert len({(int(r), int(c)) for r, c in zip(rows, cols, strict=True)}) > 5
