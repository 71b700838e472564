"""Synthetic clients drawn on demand (``fedweave.data.ondemand``): each device's samples are a
function of (seed, device), a large federated population is drawn only where a round needs it,
with the numbers of the eager dataset, and the memory check counts the cohort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedweave.config import DataConfig, SyntheticConfig
from fedweave.data import ondemand
from fedweave.data.ondemand import OnDemandData, contiguous_split
from fedweave.data.partition import split_validation
from fedweave.data.sources import load_dataset
from fedweave.data.sources.builtin import SyntheticDevices
from fedweave.errors import UserError
from fedweave.runner import Runner, run
from tests.conftest import small_config

SMALL = SyntheticConfig(dim=12, classes=4, samples_mean=2.0, samples_sigma=1.0, min_samples=6)
RUN = ["data.dataset=synthetic", "data.partition=natural", "data.nodes=60",
       "data.synthetic.dim=12", "data.synthetic.classes=4", "data.synthetic.samples_mean=2.0",
       "data.synthetic.samples_sigma=1.0", "data.synthetic.min_samples=6",
       "data.test_samples=40", "model.name=logistic", "algorithm.clients_per_round=5",
       "rounds=3", "data.val_fraction=0.2"]


def test_a_device_is_the_same_drawn_alone_or_with_the_population() -> None:
    cfg = DataConfig(dataset="synthetic", nodes=9, synthetic=SMALL)
    gen = SyntheticDevices(cfg, 3)
    ds = load_dataset(cfg, 3)
    at = int(gen.n_train[:5].sum())
    x, y = SyntheticDevices(cfg, 3).device(5)  # a fresh generator, device 5 only
    m = int(gen.n_train[5])
    assert torch.equal(ds.train_x[at: at + m], torch.from_numpy(x[:m]).float())
    assert torch.equal(ds.train_y[at: at + m], torch.from_numpy(y[:m]))


@pytest.mark.parametrize("fraction", [0.0, 0.25])
def test_contiguous_split_is_split_validation(fraction: float) -> None:
    counts = np.array([1, 2, 7, 30, 5], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    shards = [torch.arange(int(offsets[k]), int(offsets[k + 1])) for k in range(5)]
    want = split_validation(shards, fraction, 4)
    got = contiguous_split(counts, fraction, 4)
    for a, b in zip(want, got, strict=True):
        assert [t.tolist() for t in a] == [t.tolist() for t in b]


def _history(monkeypatch: pytest.MonkeyPatch, on_demand: bool, *extra: str
             ) -> tuple[list[dict[str, float]], Runner]:
    monkeypatch.setattr(ondemand, "ON_DEMAND_BYTES", 0 if on_demand else 2**62)
    runner = Runner(small_config(*RUN, *extra), None)
    assert runner.ctx.data.on_demand is on_demand
    runner.run()
    return [{k: v for k, v in h.items() if k != "wall_time"} for h in runner.history], runner


@pytest.mark.parametrize("mode", ["cohort", "all"])
def test_on_demand_run_has_the_eager_numbers(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    eager, _ = _history(monkeypatch, False, f"output.client_eval={mode}")
    lazy, runner = _history(monkeypatch, True, f"output.client_eval={mode}")
    assert lazy == eager
    data = runner.ctx.data
    assert isinstance(data, OnDemandData) and data.x.numel() == 0


def test_a_round_draws_its_cohort_not_the_population(monkeypatch: pytest.MonkeyPatch) -> None:
    """The window holds a cohort at least: each round draws its 5 devices (twice at most when
    the window is cleared mid-round), whatever the population."""
    monkeypatch.setattr(ondemand, "ON_DEMAND_BYTES", 0)
    drawn = {}
    for nodes in (60, 600):
        runner = Runner(small_config(*RUN, f"data.nodes={nodes}"), None)
        window = runner.ctx.data.window  # type: ignore[attr-defined]
        before = window.drawn  # engine calibration
        runner.run()
        drawn[nodes] = window.drawn - before
    assert 3 * 5 <= drawn[60] <= 3 * 5 * 2
    assert 3 * 5 <= drawn[600] <= 3 * 5 * 2


def test_memory_check_counts_the_cohort_not_the_population() -> None:
    """10 million devices of ~2000 samples would need terabytes eagerly; drawn on demand the
    estimate is the indices, one cohort and the test set, and names the cohort."""
    with pytest.raises(UserError, match=r"drawn on demand.*cohorts of 1000.*GiB of memory"):
        run(small_config(*RUN, "data.nodes=10000000", "data.synthetic.min_samples=2000",
                         "algorithm.clients_per_round=1000"), write=False)
