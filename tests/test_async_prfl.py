"""PR-FL (issue 12): nested masks for any densities, the residual split reconstructs every
submodel, bytes follow the formula, merges weight each client by its own staleness (the seed's
misindexing fixed), balancing and recovery move the densities as specified, and the records
score the server model beside the seed's cached-average metric."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedweave.algorithms.asynchronous.base import Job
from fedweave.algorithms.asynchronous.masks import (
    Importance,
    nested_levels,
    prunable,
    reconstruct,
    residual_pieces,
    submodel_mask,
)
from fedweave.algorithms.asynchronous.prfl import PRFL
from fedweave.config import ModelConfig
from fedweave.context import build_context
from fedweave.core.population import ParamLayout
from fedweave.errors import UserError
from fedweave.models import build_model
from fedweave.plugins import load_config
from fedweave.runner import run
from fedweave.sim.scheduler import Event

BASE = ["rounds=4", "data.nodes=10", "model.name=mlp", "model.hidden=[16]",
        "data.partition=iid", "output.plots=false", "output.progress=false",
        "engine.name=loop", "train.local_steps=3", "train.batch_size=20",
        "algorithm.name=prfl", "clock.profile=prfl"]

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MLP = build_model(ModelConfig(name="mlp", hidden=[12, 8]), (1, 8, 8), 10)
LAYOUT = ParamLayout.of(MLP)


@settings(max_examples=40, deadline=None)
@given(densities=st.lists(st.floats(0.01, 1.0), min_size=1, max_size=6, unique=True),
       base=st.floats(0.01, 0.5), seed=st.integers(0, 2**16), cost=st.booleans())
def test_masks_are_nested_for_any_densities(densities: list[float], base: float, seed: int,
                                            cost: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(LAYOUT.total, generator=gen)
    importance = torch.rand(LAYOUT.total, generator=gen)
    coeff = torch.rand(LAYOUT.total, generator=gen).double() + 0.1 if cost else None
    rho = sorted(densities)
    level = nested_levels(x, LAYOUT, importance, rho, base, coeff)
    masks = [submodel_mask(level, k) for k in range(len(rho))]
    held = prunable(LAYOUT)
    for small, big in itertools.pairwise(masks):
        assert bool((small <= big).all())                   # nested
    n = int(held.sum())
    kernel = n - sum(int((1 - base) * (sl.stop - sl.start))
                     for (_, sl), s in zip(LAYOUT.layer_slices(), LAYOUT.shapes, strict=True)
                     if len(s) >= 2)
    for k, m in enumerate(masks):
        assert bool(m[~held].all())                          # biases always sent
        assert int(m[held].sum()) == max(int(rho[k] * n), kernel)


def test_base_kernel_is_magnitude_and_the_rest_follows_importance_per_cost() -> None:
    x = torch.randn(LAYOUT.total, generator=torch.Generator().manual_seed(0))
    (_, first), (_, second) = LAYOUT.layer_slices()[0], LAYOUT.layer_slices()[2]
    n = int(prunable(LAYOUT).sum())
    level = nested_levels(x, LAYOUT, torch.zeros(LAYOUT.total), [1.0], 0.05)
    base = nested_levels(x, LAYOUT, torch.zeros(LAYOUT.total), [0.0], 0.05)
    for sl in (first, second):               # per layer: the largest |x| survive
        kept = torch.nonzero(base[sl] == 0).flatten()
        assert len(kept) == (sl.stop - sl.start) - int(0.95 * (sl.stop - sl.start))
        assert float(x[sl][kept].abs().min()) >= float(x[sl][base[sl] != 0].abs().max())
    held = int((base[prunable(LAYOUT)] == 0).sum())
    q = first.start + int(torch.nonzero(base[first] != 0)[0])     # a pruned weight of layer 0
    q2 = second.start + int(torch.nonzero(base[second] != 0)[0])  # and one of layer 1
    importance = torch.zeros(LAYOUT.total)
    importance[q], importance[q2] = 1.0, 0.5
    one_more = [(held + 1) / n]               # rank 0 may add exactly one weight
    assert nested_levels(x, LAYOUT, importance, one_more, 0.05)[q] == 0
    cost = torch.ones(LAYOUT.total, dtype=torch.float64)
    cost[first] = 1e9                         # importance ÷ cost: layer 0 is too expensive
    demoted = nested_levels(x, LAYOUT, importance, one_more, 0.05, cost)
    assert demoted[q] == 1 and demoted[q2] == 0
    assert level.max() == 0                   # density 1 holds everything


def test_residual_pieces_reconstruct_every_submodel_exactly() -> None:
    x = torch.randn(LAYOUT.total, generator=torch.Generator().manual_seed(1))
    rho = [0.1, 0.3, 0.6, 1.0]
    level = nested_levels(x, LAYOUT, torch.rand(LAYOUT.total), rho, 0.05)
    pieces = residual_pieces(x, level, len(rho))
    assert sum(len(i) for i, _ in pieces) == LAYOUT.total   # every parameter once
    for k in range(len(rho)):
        mask = submodel_mask(level, k)
        assert torch.equal(reconstruct(pieces[: k + 1], LAYOUT.total), x * mask)


def test_importance_reports_are_min_max_normalised_and_averaged() -> None:
    imp = Importance(4)
    imp.add(torch.tensor([1.0, 3.0, 5.0, 100.0]), torch.tensor([True, True, True, False]))
    imp.add(torch.tensor([2.0, 2.0, 4.0, 4.0]), torch.tensor([True, True, True, True]))
    assert imp.value().tolist() == [0.0, 0.25, 1.0, 1.0]


def _prfl(*over: str) -> PRFL:
    ctx = build_context(load_config(None, [*BASE, *over]))
    algo = PRFL(ctx, ctx.config.algorithm)
    return algo


def test_bytes_follow_the_formula() -> None:
    algo = _prfl()
    p, nodes = algo.x.numel(), list(range(10))
    bitmap = math.ceil(p / 8)
    assert algo.levels == [0.1, 0.3, 0.6, 1.0]
    stream, need, got = algo.download(nodes)
    assert stream == [4 * k + bitmap for k in algo.piece]   # pieces 0..3, bitmaps (new masks)
    ends = torch.tensor([0.0, *stream]).cumsum(0).tolist()
    assert got == [ends[algo.rank_of[i] + 1] for i in nodes]
    assert need == [(0.0, g) for g in got]                    # rank k reads pieces 0..k
    assert got[0] == 4 * p + 4 * bitmap                       # the dense client: all 4 pieces
    stream, _, got = algo.download([9])                        # it holds the masks now
    assert stream == [4 * algo.piece[0]] and got == [4 * algo.nnz[0]]
    whole = _prfl("algorithm.residual_split=false")
    stream, _need, got = whole.download(nodes)
    assert stream == [4 * n + bitmap for n in whole.nnz]      # each submodel once
    assert got == [4 * whole.nnz[whole.rank_of[i]] + bitmap for i in nodes]
    row, mask, rank = algo.start_row(9)
    job = Job(9, 0, 0, 0.1, row, {}, 60.0, mask=mask, rank=rank)
    assert algo.upload_bytes(job) == 2 * 4 * algo.nnz[0] and job.report  # + the report
    assert algo.upload_bytes(job) == 4 * algo.nnz[0] and not job.report


def test_masked_average_weights_each_client_by_its_own_staleness() -> None:
    """The seed's fed_avg indexed the coefficients by arrival order; here client i's
    weight is p_i = s_i / Σ s_j whatever order they arrive in."""
    algo = _prfl("algorithm.merge=masked_average")
    x0 = algo.x.clone()
    algo.s_latest = torch.linspace(0.2, 1.0, 10, dtype=torch.float64)
    gen = torch.Generator().manual_seed(2)
    rows = {}
    for i in (7, 3):
        row, mask, rank = algo.start_row(i)
        row = (row + torch.randn(row.shape, generator=gen)) * mask
        job = Job(i, 0, 0, 0.1, row, {}, float(10 * (i + 1)), trained=True, arrived=True,
                  mask=mask, rank=rank)
        algo.jobs[i] = job
        algo.cache[i], algo.cache_mask[i], algo.cache_n[i] = row, mask, job.samples
        rows[i] = (row, mask.double(), job.samples)
    algo.on_merge(Event(0.0, 0, "merge", -1))
    p = algo.s_latest / algo.s_latest.sum()
    num = sum(p[i] * n * r.double() for i, (r, _, n) in rows.items())
    den = sum(p[i] * n * m for i, (_, m, n) in rows.items())
    avg = torch.where(den > 0, num / den.clamp(min=1e-30), x0.double())
    alpha = float(p[3] + p[7])
    torch.testing.assert_close(algo.x.double(), alpha * avg + (1 - alpha) * x0.double())
    assert not algo.jobs  # both released


def test_balancing_moves_slow_clients_down_and_recovery_raises_the_floor() -> None:
    algo = _prfl("algorithm.densities=[1,1,1,1,1,1,1,1,1,0.5]", "algorithm.recovery=false")
    algo.gaps[:, -1] = 10.0
    algo.gaps[4, -1] = 20.0                   # twice the fastest client's time: rate 0.5
    algo.gaps[9, -1] = 10.3                   # within 5%: unchanged
    algo._maintain()
    assert algo.rho[4] == pytest.approx(1 - 0.9 * 0.5) and algo.rho[9] == 0.5
    assert algo.rho[0] == 1.0 and algo.epoch == 2        # masks rebuilt
    ref = _prfl("algorithm.recovery=false", "algorithm.balance_reference=client0",
                "algorithm.densities=[1,1,1,1,1,1,1,1,1,1]")
    ref.gaps[:, -1] = 10.0
    ref.gaps[0, -1] = 20.0                    # client 0 is slow: the others speed up, capped
    ref.gaps[5, -1] = 100.0
    ref._maintain()
    assert ref.rho[1] == 1.0 and ref.rho[5] == pytest.approx(max(0.08, 1 - 0.9 * 0.8))
    rec = _prfl()
    rec.best_val, rec.bad_val = 2.0, rec.config.patience - 1   # one more check without gain
    floor = rec.floor
    rec._recover()
    assert rec.floor == pytest.approx(floor + 0.2) and float(rec.rho.min()) >= rec.floor
    assert not rec.balancing
    rec.loss_sum[:] = 1.0
    rec.loss_n[:] = 1.0
    rec.best_loss[:] = 0.5
    rec.bad_loss[:] = rec.config.patience - 1
    before = rec.rho.clone()
    rec._recover()                             # every client's own stopper fires
    assert torch.allclose(rec.rho, (before + 0.2).clamp(max=1.0))


def test_prfl_run_scores_the_server_model_and_records_the_cached_average() -> None:
    res = run(load_config(None, [*BASE, "rounds=6", "output.eval_every=3",
                                 "algorithm.interval=3", "algorithm.window_s=0"]), write=False)
    for h in res.history:
        assert 0 <= h["test_acc"] <= 1 and 0 <= h["cached_average_test_acc"] <= 1
        assert h["density_mean"] > 0
    assert any(h["test_acc"] != h["cached_average_test_acc"] for h in res.history)
    s = res.summary
    assert s["merge"] == "buffered_masked_average" and len(s["final_densities"]) == 10
    times = s["client_time"]
    per_job = {c: t["compute_s"] / t["jobs"] for c, t in times.items()}
    assert times["client9"]["upload_s"] > 0
    assert per_job["client0"] > 5 * per_job["client9"]  # dense vs 10% of the multiply-adds


def test_prfl_refuses_what_cannot_act() -> None:
    with pytest.raises(UserError, match="one density per client"):
        _prfl("algorithm.densities=[1,0.5]")
    with pytest.raises(UserError, match="val_fraction"):
        _prfl("data.val_fraction=0")


def test_sync_prfl_merges_every_client_at_a_barrier_and_balances_by_job_duration() -> None:
    """``algorithm.mode: sync`` (the seed's ``-ch syn``): each server update merges the 10
    clients' jobs, all started from one version (τ = 0); every client is busy (downloading,
    computing, uploading or waiting at the barrier) for the whole simulated time; balancing
    lowers the densities of the clients whose jobs take longer than the fastest's."""
    res = run(load_config(None, [*BASE, "rounds=3", "output.eval_every=1",
                                 "algorithm.interval=3", "algorithm.mode=sync"]), write=False)
    assert [h["merged"] for h in res.history] == [10.0] * 3
    assert [h["staleness"] for h in res.history] == [0.0] * 3
    s = res.summary
    assert s["mode"] == "sync"
    for t in s["client_time"].values():
        assert t["jobs"] == 3
        busy = t["download_s"] + t["compute_s"] + t["upload_s"] + t["wait_s"]
        assert busy == pytest.approx(s["sim_time_s"])
    waits = [t["wait_s"] for t in s["client_time"].values()]
    assert min(waits) < 1e-9 < max(waits)      # the slowest client never waits
    initial = [1, 1, 0.6, 0.6, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1]
    moved = [i for i, (a, b) in enumerate(zip(initial, s["final_densities"], strict=True))
             if b < a - 1e-9]
    assert 0 in moved                          # the dense client's jobs are the slowest
    assert all(b >= 0.08 - 1e-12 for b in s["final_densities"])  # never below the floor


def test_shipped_config_prunes_by_speed_then_recovers_to_dense(tmp_path: Path) -> None:
    """configs/prfl-digits-densities.yaml: clients of different speeds, all dense at the
    start. Balancing prunes the slow clients first (density ordered by speed after the first
    interval), the densities fall to the floor, then recovery raises them back to dense."""
    cfg = load_config(CONFIGS / "prfl-digits-densities.yaml",
                      ["output.progress=false", f"output.dir={tmp_path}"])
    res = run(cfg)
    assert res.run_dir is not None
    rows = list(csv.DictReader((res.run_dir / "nodes" / "densities.csv").open()))
    rho = [[float(v) for k, v in r.items() if k.startswith("client")] for r in rows]
    speeds = cfg.clock.speeds
    assert speeds is not None and len(rho) == cfg.rounds // cfg.output.eval_every
    first = rho[0]                              # after the first balancing
    assert first == sorted(first, reverse=True) and first[0] == 1.0 > 0.5 > first[-1]
    mean = [sum(r) / len(r) for r in rho]
    low = mean.index(min(mean))
    assert min(mean) < 0.2 and 0 < low < len(mean) - 1          # pruned close to the floor
    assert mean[-1] == 1.0 and all(b >= a - 1e-12 for a, b in zip(mean[low:], mean[low + 1:],
                                                                   strict=False))  # recovered
    assert res.summary["final"]["test_acc"] > 0.85
