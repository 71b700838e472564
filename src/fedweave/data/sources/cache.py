"""Decoded-tensor caches of the slow-to-decode formats (LEAF json, image folders)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch


def cached(cache: Path, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Decoded tensors from ``cache`` (a torch.save file) or ``build()``, saved there when the
    folder is writable (written to a temporary name and renamed, so never half-written)."""
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    tensors = build()
    tmp = cache.with_name(cache.name + ".tmp")
    try:
        torch.save(tensors, tmp)
        os.replace(tmp, cache)
    except OSError:
        tmp.unlink(missing_ok=True)
    return tensors
