"""Batch data augmentation on tensors, vectorized over the batch (no per-sample Python loop)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def random_crop_flip(x: torch.Tensor, generator: torch.Generator, padding: int = 4,
                     flip: bool = True) -> torch.Tensor:
    """The standard CIFAR augmentation on a batch ``[B, C, H, W]`` (uint8 or float): zero-pad by
    ``padding``, crop a random ``H × W`` window per sample, then mirror each sample horizontally
    with probability ½. One gather over index grids; the draws (offsets, then flips) come from
    ``generator`` only, so the result is a function of the batch and the generator state."""
    b, _, h, w = x.shape
    dev = generator.device
    top = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=dev).to(x.device)
    rows = top[:, None] + torch.arange(h, device=x.device)  # [B, H]
    cols = left[:, None] + torch.arange(w, device=x.device)  # [B, W]
    if flip:
        mirror = (torch.rand(b, generator=generator, device=dev) < 0.5).to(x.device)
        cols = torch.where(mirror[:, None], cols.flip(1), cols)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]
