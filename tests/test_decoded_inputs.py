"""Images converted to model inputs once (``FederatedData.decoded``) give the very numbers of
the per-batch conversion: training, the test and validation evaluations, per-client
validation and the personal test, on the fused, vectorized and loop engines."""

from __future__ import annotations

import pytest
import torch

import fedweave.data.federated as federated
from fedweave.data.federated import build_federated_data
from fedweave.plugins import load_config
from fedweave.runner import run
from tests.conftest import small_config

CASES = {
    "fused-mlp": ["engine.name=fused", "data.nodes=8", "algorithm.clients_per_round=5",
                  "output.client_eval=all"],
    "vectorized-mlp": ["engine.name=vectorized", "data.nodes=6", "data.client_test_fraction=0.2"],
    "loop-cnn-local": ["model.name=cnn", "engine.name=loop", "algorithm.name=local",
                       "data.nodes=4"],
}


def _numbers(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in history]


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if i else c
                                  for i, c in enumerate(CASES)])  # one case in the default run
def test_decoded_inputs_give_the_same_bits(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kept = run(small_config("rounds=2", *CASES[case]), write=False)
    monkeypatch.setattr(federated, "DECODED_BYTES", 0)  # convert per batch, as stored
    per_batch = run(small_config("rounds=2", *CASES[case]), write=False)
    assert _numbers(kept.history) == _numbers(per_batch.history)
    assert kept.history[-1]["test_acc"] > 0.3


def test_what_is_not_decoded(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(None, ["data.nodes=4"])
    data = build_federated_data(cfg.data, 0)
    dec = data.decoded()
    assert dec is not None and dec[0].dtype == torch.float32
    assert torch.equal(dec[0][:5], data.features(data.x[:5]))
    data.augment = True
    data._decoded = None
    assert data.decoded() is None  # random crops need the stored bytes
    monkeypatch.setattr(federated, "DECODED_BYTES", 4 * data.x.numel())  # no room for the test set
    data.augment = False
    assert data.decoded() is None
    assert data.take_inputs(torch.tensor([0, 1]))[0].dtype == torch.uint8
