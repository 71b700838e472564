"""The decoded-data cache verifies its bytes: an entry edited in place at the same size
(labels zeroed, pixels changed) is rebuilt, never trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_sources import write_mnist_dir
from test_sources_cache import entries, load


@pytest.mark.parametrize("array", ["train_labels", "train_images", "test_labels"])
def test_same_size_edit_of_a_cached_array_is_rebuilt(tmp_path: Path, array: str) -> None:
    folder = tmp_path / "MNIST" / "raw"
    write_mnist_dir(folder, True)
    first = load("mnist", tmp_path)
    [entry] = entries(folder / "fedweave-cache", "mnist")
    path = entry / f"{array}.npy"
    blob = path.read_bytes()
    original = np.load(path)
    np.save(path, np.zeros_like(original))  # same header, same size, other bytes
    assert path.stat().st_size == len(blob) and not np.array_equal(np.load(path), original)
    again = load("mnist", tmp_path)
    assert torch.equal(again.train_y, first.train_y) and torch.equal(again.test_y, first.test_y)
    assert torch.equal(again.train_x, first.train_x)
    [rebuilt] = entries(folder / "fedweave-cache", "mnist")
    assert np.array_equal(np.load(rebuilt / f"{array}.npy"), original)
