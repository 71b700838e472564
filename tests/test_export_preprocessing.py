"""Exported models carry their input preprocessing: the safetensors metadata and
``load_model(...).preprocess`` turn raw uint8 images into what the model was trained on, so a
model outside fedweave predicts exactly as the run evaluated it."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

import fedweave
from fedweave.cli import app
from fedweave.data.federated import build_federated_data
from fedweave.export import read_preprocessing
from fedweave.models import build_model
from fedweave.runner import run
from tests.conftest import small_config


def test_exported_model_applied_to_raw_uint8_images_predicts_as_inside_fedweave(
        tmp_path: Path) -> None:
    cfg = small_config("rounds=2", "model.name=cnn", "model.width=0.25",
                       f"output.dir={tmp_path}")
    res = run(cfg)
    assert res.run_dir is not None
    data = build_federated_data(cfg.data, cfg.seed)
    raw = data.test_x
    assert raw.dtype == torch.uint8 and data.mean is not None   # digits are normalised
    inside = data.features(raw)                                 # what the run evaluated
    model = fedweave.load_model(res.run_dir)
    with torch.no_grad():
        expected = model(inside).argmax(1)
        got = model(model.preprocess(raw)).argmax(1)            # the documented API
        channels_last = model(model.preprocess(raw.permute(0, 2, 3, 1))).argmax(1)
    assert torch.equal(got, expected) and torch.equal(channels_last, expected)
    acc = float((got == data.test_y).double().mean())
    assert acc == res.summary["final"]["test_acc"]
    assert model.preprocess.classes == tuple(str(i) for i in range(10))

    out = tmp_path / "m.safetensors"
    assert CliRunner().invoke(app, ["export", str(res.run_dir), "--out", str(out)]).exit_code == 0
    with safe_open(str(out), framework="pt") as f:
        meta = json.loads(f.metadata()["preprocessing"])
    assert meta["input_dtype"] == "uint8" and meta["scale"] == 1 / 255
    assert meta["mean"] == list(data.mean) and meta["std"] == list(data.std)
    assert meta["input_shape"] == [1, 8, 8] and meta["layout"] == "NCHW"
    assert read_preprocessing(out) == model.preprocess
    # outside fedweave: plain torch and the metadata only
    plain = build_model(cfg.model, tuple(meta["input_shape"]), 10)
    plain.load_state_dict(load_file(str(out)))
    plain.eval()
    m = torch.tensor(meta["mean"]).view(-1, 1, 1)
    s = torch.tensor(meta["std"]).view(-1, 1, 1)
    with torch.no_grad():
        by_hand = plain((raw.float() / 255 - m) / s).argmax(1)
    assert torch.equal(by_hand, expected)
