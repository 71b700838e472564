"""Sample-level differential privacy (DP-SGD in local training): the privatised gradient equals
its definition (clip each per-sample gradient, sum, add σ·C noise, divide by the expected
batch), batches follow the accounted sampling scheme, both engines give identical runs, and
the recorded ε is the accountant's for the client with the most steps."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from fedweave.context import build_context
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.privacy.accountant import epsilon
from fedweave.privacy.sample import SampleDPEngine
from fedweave.rng import torch_generator
from fedweave.runner import run
from fedweave.training.trainer import LocalTrainer

pytest.importorskip("dp_accounting", reason="pip install 'fedweave[privacy]'")

BASE = ["rounds=3", "data.nodes=10", "algorithm.clients_per_round=5", "model.name=mlp",
        "model.hidden=[32]", "output.plots=false", "output.progress=false",
        "privacy.level=sample"]


def engine(*over: str) -> tuple[SampleDPEngine, object]:
    ctx = build_context(load_config(None, [*BASE, *over]))
    assert isinstance(ctx.local_engine, SampleDPEngine)
    return ctx.local_engine, ctx


def test_privatised_gradient_equals_its_definition() -> None:
    dp, ctx = engine("privacy.clip=0.5", "privacy.noise_multiplier=0.8")
    params = ctx.init_params.expand(2, -1).clone()  # type: ignore[attr-defined]
    nodes = torch.tensor([3, 7])
    active = torch.ones(2, dtype=torch.bool)
    dummy = torch.zeros(2, 1, dtype=torch.int64)
    out = dp.grads(params, {}, dummy, dummy.float(), active, (4, 2), nodes)
    for k, node in enumerate(nodes.tolist()):
        rows = dp.draw(node, (4, 2))
        x, y = ctx.data.gather(rows)  # type: ignore[attr-defined]
        per = dp.inner.sample_grads(params[k], {}, x, y, idx=rows)  # type: ignore[attr-defined]
        clipped = per * (0.5 / per.norm(dim=1, keepdim=True)).clamp(max=1)
        z = torch.randn(params.shape[1], generator=torch_generator(0, "dp-sgd", 4, 2, node))
        b = min(32, len(ctx.data.train_idx[node]))  # type: ignore[attr-defined]
        torch.testing.assert_close(out.grads[k], (clipped.sum(0) + 0.4 * z) / b)
        assert out.count[k] == len(rows)


def test_without_noise_or_clipping_it_is_the_minibatch_gradient_of_the_drawn_batch() -> None:
    dp, ctx = engine("privacy.sampling=fixed", "privacy.noise_multiplier=0",
                     "privacy.clip=.inf")
    params = ctx.init_params.expand(1, -1).clone()  # type: ignore[attr-defined]
    rows = dp.draw(2, (0, 0))
    assert len(rows) == 32 and len(rows.unique()) == 32  # b_i of n_i without replacement
    one = torch.ones(1, dtype=torch.bool)
    private = dp.grads(params, {}, rows[None], torch.ones(1, 32), one, (0, 0), torch.tensor([2]))
    plain = dp.inner.grads(params, {}, rows[None], torch.ones(1, 32), one, (0, 0),
                           torch.tensor([2]))
    torch.testing.assert_close(private.grads, plain.grads, rtol=1e-5, atol=1e-7)


def test_poisson_batches_have_the_expected_size_and_are_seeded() -> None:
    dp, ctx = engine()
    n = len(ctx.data.train_idx[1])  # type: ignore[attr-defined]
    sizes = [len(dp.draw(1, (r, 0))) for r in range(300)]
    assert abs(sum(sizes) / len(sizes) - min(32, n)) < 1.5 and len(set(sizes)) > 5
    assert torch.equal(dp.draw(1, (5, 3)), dp.draw(1, (5, 3)))
    assert bool(torch.isin(dp.draw(1, (5, 3)), ctx.data.train_idx[1]).all())  # type: ignore[attr-defined]


def test_both_engines_give_the_same_run_and_epsilon_is_the_worst_clients() -> None:
    over = ["privacy.noise_multiplier=1.0", "privacy.clip=1.0"]
    loop = run(load_config(None, [*BASE, *over, "engine.name=loop"]), write=False)
    vec = run(load_config(None, [*BASE, *over, "engine.name=vectorized"]), write=False)
    a, _, _ = loop.algorithm.models()  # type: ignore[union-attr]
    b, _, _ = vec.algorithm.models()  # type: ignore[union-attr]
    assert torch.equal(a, b)
    # the fused engine (auto's choice for this MLP) goes through the same privatised steps
    fused = run(load_config(None, [*BASE, *over, "engine.name=fused"]), write=False)
    c, _, _ = fused.algorithm.models()  # type: ignore[union-attr]
    torch.testing.assert_close(c, a, rtol=1e-4, atol=1e-5)
    ledger = loop.algorithm.ledger  # type: ignore[union-attr]
    sizes, batch, steps = ledger.sizes, ledger.batch, ledger.steps
    worst = max(epsilon("rdp", "poisson", 1.0, int(steps[i]), 1e-5, int(sizes[i]),
                        int(batch[i])) for i in range(10) if steps[i])
    assert loop.summary["privacy"]["epsilon"] == pytest.approx(worst)
    assert loop.summary["privacy"]["level"] == "sample"
    eps = [h["epsilon"] for h in loop.history]
    assert eps == sorted(eps) and eps[-1] == loop.summary["privacy"]["epsilon"]


def test_dp_sgd_is_refused_where_it_cannot_act() -> None:
    with pytest.raises(UserError, match="BatchNorm"):
        build_context(load_config(None, [*BASE, "model.name=cnn", "model.norm=batch"]))
    with pytest.raises(UserError, match="does not checkpoint"):
        run(load_config(None, [*BASE, "algorithm.name=clustered"]), write=False)


def test_leave_one_out_retraining_keeps_the_dp_sgd_noise() -> None:
    """``RunContext.with_data`` (leave-one-out influence retraining) wraps the trainer as a fresh
    build does: the DP-SGD engine is there, its steps equal a context built over the smaller
    data, and they differ from the same training without the privacy wrapper."""
    cfg = load_config(None, [*BASE, "privacy.noise_multiplier=1.0", "privacy.clip=1.0"])
    ctx = build_context(cfg)
    shards = ctx.data.train_idx
    without = dataclasses.replace(ctx.data, train_idx=[shards[0][1:], *shards[1:]])
    retrain = ctx.with_data(without)
    assert isinstance(retrain.local_engine, SampleDPEngine)
    assert retrain.local_engine.data is without
    nodes = torch.tensor([0, 3])
    start = ctx.init_params.expand(2, -1).clone()
    out = retrain.trainer.train(nodes, start, {}, 0, 0.1).params
    fresh = build_context(cfg, data=without).trainer.train(nodes, start, {}, 0, 0.1).params
    torch.testing.assert_close(out, fresh, rtol=0, atol=0)
    bare = LocalTrainer(retrain.local_engine.inner, without, cfg.train)
    assert not torch.allclose(out, bare.train(nodes, start, {}, 0, 0.1).params)
