"""Shared fixtures: small fast configs on the built-in digits data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from fedweave.config import Config, load_config
from fedweave.plugins import load_builtins

load_builtins()

torch.set_num_threads(int(os.environ.get("FEDWEAVE_TEST_THREADS", "2")))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def small_config(*overrides: str) -> Config:
    """FedAvg on digits with an MLP: a few seconds at most."""
    base = ["rounds=3", "model.name=mlp", "model.hidden=[64]", "data.nodes=5",
            "output.progress=false", "output.plots=false"]
    return load_config(None, base + list(overrides))


@pytest.fixture
def tmp_out(tmp_path: Path) -> str:
    return f"output.dir={tmp_path / 'runs'}"


needs_fashion = pytest.mark.skipif(not FASHION_DIR.is_dir(),
                                   reason="apt-get install dataset-fashion-mnist")


def latest_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of a run directory's newest checkpoint (the file latest.json names)."""
    import json

    from safetensors.torch import load_file

    latest = json.loads((Path(run_dir) / "checkpoints" / "latest.json").read_text())
    return load_file(str(Path(run_dir) / "checkpoints" / latest["file"]))
