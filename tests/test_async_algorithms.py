"""Asynchronous and heterogeneous FL (issue 12): FedAsync, FedBuff, FedFix and HeteroFL equal
their synchronous special cases, staleness functions take their published values, and a
width-r HeteroFL submodel lives in the right slices of the global model."""

from __future__ import annotations

import math

import pytest
import torch

from fedweave.algorithms.asynchronous.staleness import staleness_weight
from fedweave.algorithms.federated.heterofl import LEVELS
from fedweave.config import ModelConfig
from fedweave.context import build_context
from fedweave.core.population import ParamLayout, slice_index
from fedweave.errors import UserError
from fedweave.models import build_model
from fedweave.plugins import load_config
from fedweave.runner import run

BASE = ["rounds=3", "data.nodes=5", "model.name=mlp", "model.hidden=[16]", "data.partition=iid",
        "output.plots=false", "output.progress=false", "engine.name=vectorized",
        "train.local_steps=4", "train.lr=0.1"]


def _run(*overrides: str):  # type: ignore[no-untyped-def]
    return run(load_config(None, [*BASE, *overrides]), write=False)


def _model(res) -> torch.Tensor:  # type: ignore[no-untyped-def]
    return res.algorithm.models()[0][0]


def _same_history(a, b, keys=("test_acc", "test_loss", "train_loss", "sim_time")) -> None:  # type: ignore[no-untyped-def]
    assert len(a.history) == len(b.history)
    for ha, hb in zip(a.history, b.history, strict=True):
        for k in keys:
            assert ha[k] == pytest.approx(hb[k], rel=1e-5, abs=1e-6), k


def test_staleness_functions_on_known_values() -> None:
    assert staleness_weight("constant", 7, 0.5, 4) == 1.0
    assert staleness_weight("poly", 0, 0.5, 4) == 1.0
    assert staleness_weight("poly", 3, 0.5, 4) == 0.5              # (3 + 1)^(−1/2)
    assert staleness_weight("poly", 7, 1 / 3, 4) == pytest.approx(0.5)
    assert staleness_weight("hinge", 4, 10.0, 4) == 1.0            # τ ≤ b
    assert staleness_weight("hinge", 6, 10.0, 4) == 1 / 21         # 1/(a(τ − b) + 1)
    assert staleness_weight("hinge", 3, 0.6, 2) == pytest.approx(1 / 1.6)


def test_fedbuff_with_k_and_c_the_cohort_and_equal_speeds_is_sync_fedavg() -> None:
    fedavg = _run("algorithm.name=fedavg", "aggregator.name=mean")
    fedbuff = _run("algorithm.name=fedbuff", "algorithm.buffer_size=5",
                   "algorithm.concurrency=5", "algorithm.staleness=poly")
    torch.testing.assert_close(_model(fedbuff), _model(fedavg), rtol=1e-5, atol=1e-6)
    _same_history(fedbuff, fedavg)
    for key in ("bytes_up", "bytes_down", "sim_time_s"):
        assert fedbuff.summary[key] == pytest.approx(fedavg.summary[key]), key
    assert all(h["staleness"] == 0 and h["merged"] == 5 for h in fedbuff.history)


def test_fedasync_with_one_client_and_alpha_one_is_sequential_local_sgd() -> None:
    over = ["data.nodes=1", "algorithm.name=fedasync", "algorithm.alpha=1",
            "algorithm.staleness=poly", "rounds=4"]
    res = _run(*over)
    cfg = load_config(None, [*BASE, *over])
    ctx = build_context(cfg)
    x = ctx.init_params
    for j in range(4):  # job j of client 0 draws the batches of round j
        x = ctx.trainer.train(torch.tensor([0]), x.unsqueeze(0), {}, j, cfg.train.lr).params[0]
    assert torch.equal(_model(res), x)
    assert all(h["staleness"] == 0 for h in res.history)


def test_fedasync_staleness_and_mixing_follow_the_formula() -> None:
    """Two clients in flight: the second arrival is one version stale and mixes with
    α·s(1)."""
    res = _run("data.nodes=2", "algorithm.name=fedasync", "algorithm.concurrency=2",
               "algorithm.alpha=0.5", "algorithm.staleness=hinge", "algorithm.staleness_a=3",
               "algorithm.staleness_b=0", "rounds=2", "clock.speeds=[1.0,0.5]")
    assert [h["staleness"] for h in res.history] == [0.0, 1.0]
    ctx = build_context(load_config(None, [*BASE, "data.nodes=2"]))
    x0 = ctx.init_params
    trained = ctx.trainer.train(torch.tensor([0, 1]), x0.expand(2, -1), {}, 0, 0.1).params
    x1 = 0.5 * x0 + 0.5 * trained[0]
    a = 0.5 / (3 * 1 + 1)
    torch.testing.assert_close(_model(res), (1 - a) * x1 + a * trained[1])


def test_fedfix_with_every_client_inside_the_interval_is_sync_fedavg() -> None:
    fedavg = _run("algorithm.name=fedavg")
    fedfix = _run("algorithm.name=fedfix", "algorithm.interval_s=10")
    torch.testing.assert_close(_model(fedfix), _model(fedavg), rtol=1e-5, atol=1e-6)
    assert [h["sim_time"] for h in fedfix.history] == [10.0, 20.0, 30.0]


@pytest.mark.parametrize(("weighted", "aggregator"), [("true", None), ("false", "mean")])
def test_heterofl_with_every_rate_one_is_fedavg(weighted: str, aggregator: str | None) -> None:
    fedavg = _run("algorithm.name=fedavg", *([f"aggregator.name={aggregator}"] if aggregator
                                              else []))
    hetero = _run("algorithm.name=heterofl", "algorithm.client_rates=[1,1,1,1,1]",
                  f"algorithm.weighted={weighted}")
    torch.testing.assert_close(_model(hetero), _model(fedavg), rtol=1e-5, atol=1e-6)
    _same_history(hetero, fedavg)


def test_heterofl_submodel_trains_in_its_slice_of_the_global_model() -> None:
    over = ["algorithm.name=heterofl", "algorithm.client_rates=[0.5]", "data.nodes=1",
            "rounds=1", "model.hidden=[8]", "algorithm.scaler=false"]
    res = _run(*over)
    cfg = load_config(None, [*BASE, *over])
    ctx = build_context(cfg)
    sub = ctx.shape("half", cfg.model.model_copy(update={"width": 0.5}))
    index = slice_index(ctx.layout, sub.layout)
    assert sub.layout.shapes[0] == torch.Size([4, 64])  # the first ⌈0.5·8⌉ hidden units
    x0 = ctx.init_params
    trained = sub.trainer.train(torch.tensor([0]), x0[index].unsqueeze(0), {}, 0, 0.1).params[0]
    x = _model(res)
    torch.testing.assert_close(x[index], trained)        # the slice is the trained submodel
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[index] = False
    assert torch.equal(x[outside], x0[outside])           # nobody held the rest
    assert res.summary["bytes_up"] == 4 * sub.layout.total  # the submodel is what is sent


def test_heterofl_levels_are_the_published_widths_of_conv2() -> None:
    """fedweave builds a rate-r submodel with model.width × r (each hidden width round(r·C));
    HeteroFL takes ⌈r·C⌉. For the published rates on conv2 (32, 64, 2048) they agree."""
    full = build_model(ModelConfig(name="conv2", norm="none"), (1, 28, 28), 10)
    for rate in LEVELS:
        sub = build_model(ModelConfig(name="conv2", norm="none", width=rate), (1, 28, 28), 10)
        shapes = ParamLayout.of(sub).shapes
        assert [shapes[0][0], shapes[2][0], shapes[4][0]] == [math.ceil(rate * c)
                                                              for c in (32, 64, 2048)]
        assert len(slice_index(ParamLayout.of(full), ParamLayout.of(sub))) == \
            ParamLayout.of(sub).total


def test_heterofl_fix_and_dynamic_assignment() -> None:
    fix = _run("algorithm.name=heterofl", "algorithm.levels=[1,0.5]", "data.nodes=4",
               "rounds=1")
    assert fix.summary["client_rates"] == [1.0, 1.0, 0.5, 0.5]
    dyn = _run("algorithm.name=heterofl", "algorithm.levels=[1,0.5]", "data.nodes=4",
               "algorithm.assignment=dynamic", "rounds=3")
    assert dyn.summary["client_rates"] == "dynamic"
    assert len({h["rate_mean"] for h in dyn.history}) > 1
    with pytest.raises(UserError, match="client_rates"):
        load_config(None, [*BASE, "algorithm.name=heterofl", "algorithm.client_rates=[1]",
                           "algorithm.levels=[1,0.5]"])


@pytest.mark.parametrize("name", ["fedasync", "fedbuff", "fedfix", "prfl"])
def test_corrupted_uploads_are_discarded_on_arrival(name: str) -> None:
    extra = ["algorithm.densities=[1,0.5,0.5,0.3,0.3]"] if name == "prfl" else []
    res = _run(f"algorithm.name={name}", "clock.message_corruption=0.4", *extra)
    assert torch.isfinite(_model(res)).all()
    assert sum(h.get("updates_rejected", 0) for h in res.history) > 0
    clean = _run(f"algorithm.name={name}", *extra)
    assert all("updates_rejected" not in h for h in clean.history)


def test_model_attacks_on_asynchronous_jobs_key_each_job_alone() -> None:
    """An attacker's upload is drawn from its own job's key: the same whether its job is
    trained alone or together with another client's job."""
    cfg = load_config(None, [*BASE, "algorithm.name=fedasync", "attack.name=gaussian",
                             "attack.nodes=[0]", "attack.std=1.0"])
    ctx = build_context(cfg)
    x = ctx.init_params.unsqueeze(0)
    both = ctx.trainer.train(torch.tensor([0, 1]), x.repeat(2, 1), {}, 0, 0.1,
                             batch_keys=torch.tensor([3, 4]))
    alone = ctx.trainer.train(torch.tensor([0]), x, {}, 0, 0.1, batch_keys=torch.tensor([3]))
    torch.testing.assert_close(both.params[0], alone.params[0], rtol=0, atol=0)
    assert (both.params[0] - x[0]).abs().max() > 0.5   # noise of std 1, not a trained step
    res = _run("algorithm.name=fedasync", "attack.name=gaussian", "attack.nodes=[0]")
    assert res.summary["attack"]["nodes"] == [0]


def test_jobs_trained_together_keep_their_own_batches_on_every_engine() -> None:
    """FedAsync with 5 jobs in flight: the fused engine trains each job on its own batch
    stream (its job key), as the vectorized engine does."""
    vec = _run("algorithm.name=fedasync", "algorithm.concurrency=5", "clock.speed_sigma=0.5")
    fused = _run("algorithm.name=fedasync", "algorithm.concurrency=5", "clock.speed_sigma=0.5",
                 "engine.name=fused")
    torch.testing.assert_close(_model(fused), _model(vec), rtol=1e-4, atol=1e-5)


def test_every_upload_corrupted_is_one_line_not_a_hang() -> None:
    with pytest.raises(UserError, match="uploads in a row arrived non-finite"):
        _run("algorithm.name=fedasync", "clock.message_corruption=1.0")
