"""Checkpoints written beside the next round (``Checkpoints.save(background=True)``): the same
files as a write in place, a snapshot taken at the call, and a failed write raised at the
next save or flush."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedweave.records.checkpoints import Checkpoints, sha256


def state() -> dict[str, torch.Tensor]:
    return {"x": torch.arange(12, dtype=torch.float32).view(3, 4), "n": torch.tensor([7])}


def test_a_background_write_lands_the_same_files_as_one_in_place(tmp_path: Path) -> None:
    here, there = Checkpoints(tmp_path / "a"), Checkpoints(tmp_path / "b")
    meta = {"totals": {"wall_s": 1.5}, "history": [{"round": 1, "val_acc": 0.5}]}
    here.save(1, state(), meta, score=0.5)
    there.save(1, state(), meta, score=0.5, background=True)
    there.flush()
    for name in ("round-000001.safetensors", "round-000001.json", "latest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    entry = json.loads((tmp_path / "b" / "round-000001.json").read_text())
    assert entry["sha256"] == sha256(tmp_path / "b" / "round-000001.safetensors")
    got = there.load()
    assert got is not None and got[0] == 1 and torch.equal(got[1]["x"], state()["x"])


def test_the_snapshot_is_taken_when_save_returns(tmp_path: Path) -> None:
    ckpt = Checkpoints(tmp_path)
    tensors = state()
    meta = {"history": [{"round": 1}]}
    ckpt.save(1, tensors, meta, background=True)
    tensors["x"].add_(100)  # the next round changes the live state in place
    meta["history"].append({"round": 2})
    ckpt.flush()
    assert torch.equal(load_file(str(tmp_path / "round-000001.safetensors"))["x"],
                       state()["x"])
    assert json.loads((tmp_path / "round-000001.json").read_text())["history"] == [{"round": 1}]


def test_writes_land_in_order_and_retention_keeps_the_fallback(tmp_path: Path) -> None:
    ckpt = Checkpoints(tmp_path)
    for r in range(1, 6):
        ckpt.save(r, state(), {}, background=True)
    ckpt.flush()
    assert ckpt.rounds() == [4, 5]
    assert json.loads((tmp_path / "latest.json").read_text())["round"] == 5


def test_a_failed_background_write_is_raised_at_the_next_save(tmp_path: Path) -> None:
    ckpt = Checkpoints(tmp_path / "ckpt")
    ckpt.save(1, state(), {}, background=True)
    ckpt.flush()
    (tmp_path / "ckpt" / ".round-000002.safetensors.tmp").mkdir()  # the write cannot open it
    ckpt.save(2, state(), {}, background=True)
    with pytest.raises(IsADirectoryError):
        ckpt.save(3, state(), {})
    ckpt.flush()  # the error was raised once
    assert ckpt.load() is not None and ckpt.load()[0] == 1  # type: ignore[index]
