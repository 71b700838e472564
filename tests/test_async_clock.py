"""The clock of federated clients (issue 12): server links shared first come first served,
multicast downloads, per-job bandwidth redraws (PR-FL's profile), per-step compute, the byte
formula, and synchronous FedAvg on that clock (a round lasts as long as its slowest job)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedweave.config import ClockConfig
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.runner import run
from fedweave.sim.clock import (
    MB,
    PRFL_DOWNLOAD,
    PRFL_UPLOAD,
    FederatedClock,
    SharedLink,
    dense_bytes,
    masked_download_bytes,
    node_profiles,
    prfl_profiles,
    read_time,
    sparse_upload_bytes,
)
from fedweave.training.batches import local_steps


def test_shared_link_serves_transfers_first_come_first_served() -> None:
    link = SharedLink(10.0)
    # a client capped at 4 B/s takes 4 of the 10 B/s for 12.5 s
    assert link.send(0.0, 50.0, 4.0)[-1][0] == 12.5
    # a later transfer gets the 6 B/s left: 60 bytes by t = 11
    assert link.send(1.0, 60.0)[-1][0] == pytest.approx(11.0)
    # the third gets nothing until 11, 6 B/s until 12.5 (9 bytes), then all 10 B/s
    curve = link.send(2.0, 10.0, 100.0)
    assert curve[-1][0] == pytest.approx(12.6)
    assert [round(t, 6) for t, _ in curve] == [2.0, 11.0, 12.5, 12.6]
    # an earlier transfer is never slowed by a later one; an unlimited link shares nothing
    assert SharedLink(None).send(3.0, 10.0, 5.0)[-1][0] == 5.0
    state = link.state()
    again = SharedLink(10.0)
    again.load_state(state)
    assert again.send(13.0, 10.0)[-1][0] == link.send(13.0, 10.0)[-1][0] == 14.0


def test_a_client_reads_a_multicast_no_faster_than_it_is_sent() -> None:
    instant = [(0.0, 0.0), (0.0, 100.0)]
    assert read_time(instant, 0, 100, 10.0) == 10.0               # the client's rate
    slow_stream = [(0.0, 0.0), (10.0, 100.0)]
    assert read_time(slow_stream, 0, 100, 50.0) == 10.0           # the stream's rate
    assert read_time(slow_stream, 0, 50, 50.0) == 5.0             # a prefix
    assert read_time(slow_stream, 50, 100, 50.0) == 10.0          # a later piece
    assert read_time([(0.0, 0.0), (1.0, 100.0)], 0, 100, 50.0) == 2.0


def test_prfl_profile_means_redraws_and_server_links() -> None:
    clock = FederatedClock(ClockConfig(profile="prfl"), 12, seed=3)
    base_up = [PRFL_UPLOAD[i % 10] * MB for i in range(12)]
    assert clock.profile.bandwidth_up.tolist() == base_up
    assert clock.profile.bandwidth_down.tolist() == [PRFL_DOWNLOAD[i % 10] * MB
                                                     for i in range(12)]
    assert clock.rates(4, 7) == clock.rates(4, 7) != clock.rates(4, 8)
    ups = np.array([clock.rates(4, k)[0] for k in range(400)]) / base_up[4]
    # each value is the mean of 20 factors exp(N(0, 0.3²)): mean e^{σ²/2}, sd ≈ 0.07
    assert ups.mean() == pytest.approx(math.exp(0.045), rel=0.02)
    assert 0.04 < ups.std() < 0.1
    assert clock.server_up.capacity == pytest.approx(10 * MB, rel=0.05)
    assert clock.server_down.capacity == pytest.approx(50 * MB, rel=0.05)
    assert not clock.static and FederatedClock(ClockConfig(), 3, 0).static
    # the static PR-FL profile of the decentralized clock keeps its numbers
    p = prfl_profiles(10, seed=0)
    assert p.bandwidth_down[0] == pytest.approx(20 * MB, rel=0.2)


def test_concurrent_uploads_share_the_servers_download_link() -> None:
    clock = FederatedClock(ClockConfig(server_down=100.0, bandwidth_up=80.0), 2, seed=0)
    ends = clock.job_arrivals(0.0, [0, 1], 0, [0.0, 0.0], [100.0, 100.0], [0.0, 0.0])
    # client 0 at its 80 B/s; client 1 gets 20 B/s until 1.25 s (25 bytes), then 80 B/s
    assert ends == pytest.approx([1.25, 1.25 + 75 / 80])
    # a client that dropped out does not use the link
    free = FederatedClock(ClockConfig(server_down=100.0, bandwidth_up=80.0), 2, seed=0)
    ends = free.job_arrivals(0.0, [0, 1], 0, [0.0, 0.0], [100.0, 100.0], [0.0, 0.0],
                             dropped=[True, False])
    assert ends == pytest.approx([1.25, 1.25])


def test_seconds_per_step_from_config_and_trace(tmp_path: Path) -> None:
    p = node_profiles(ClockConfig(seconds_per_step=0.5, speeds=[1.0, 2.0]), 2, seed=0)
    assert p.seconds_per_step is not None and p.seconds_per_step.tolist() == [0.5, 0.25]
    clock = FederatedClock(ClockConfig(seconds_per_step=0.5, speeds=[1.0, 2.0]), 2, seed=0)
    assert clock.compute_seconds(1, samples=640, steps=8, fraction=0.5) == 1.0
    trace = tmp_path / "t.csv"
    trace.write_text("node,seconds_per_step\n0,0.2\n1,0.3\n")
    p = node_profiles(ClockConfig(trace=trace, seconds_per_step=1.0), 2, seed=0)
    assert p.seconds_per_step is not None and p.seconds_per_step.tolist() == [0.2, 0.3]
    with pytest.raises(UserError, match="seconds_per_step"):
        node_profiles(ClockConfig(trace=trace), 2, seed=0)  # per-sample expected


def test_byte_formula() -> None:
    assert dense_bytes(1000) == 4000
    assert sparse_upload_bytes(300) == 1200                       # values only
    assert masked_download_bytes(300, 1001) == 1200 + 126         # values + ⌈P/8⌉ bitmap
    assert masked_download_bytes(300, 1001, index=False) == 1200  # mask already held


BASE = ["rounds=3", "data.nodes=6", "model.name=logistic", "data.partition=iid",
        "output.plots=false", "output.progress=false", "engine.name=loop",
        "train.local_steps=3"]


def test_fedavg_on_the_prfl_clock_waits_for_the_slowest_member() -> None:
    cfg = load_config(None, [*BASE, "clock.bandwidth_sigma=0.3", "clock.bandwidth_up=2e5",
                             "clock.bandwidth_down=1e6", "clock.speed_sigma=0.5"])
    res = run(cfg, write=False)
    clock = FederatedClock(cfg.clock, 6, cfg.seed)
    algo = res.algorithm
    nbytes = algo.ctx.model_bytes  # type: ignore[union-attr]
    sizes = algo.ctx.data.sizes  # type: ignore[union-attr]
    samples = local_steps(cfg.train, sizes) * sizes.clamp(max=cfg.train.batch_size)
    times = [h["sim_time"] for h in res.history]
    for r, (before, after) in enumerate(zip([0.0, *times], times, strict=False)):
        jobs = []
        for i in range(6):
            up, down = clock.rates(i, r)
            jobs.append(nbytes / down + float(samples[i]) * float(clock.profile
                        .seconds_per_sample[i]) + nbytes / up)
        assert after - before == pytest.approx(max(jobs), rel=1e-12)
    # with the server's links shared the same round takes longer, never shorter
    shared = run(load_config(None, [*BASE, "clock.profile=prfl"]), write=False)
    alone = run(load_config(None, [*BASE, "clock.bandwidth_up=1e12", "clock.bandwidth_down=1e12"]),
                write=False)
    assert shared.summary["sim_time_s"] > alone.summary["sim_time_s"]
    assert torch.equal(shared.algorithm.models()[0], alone.algorithm.models()[0])  # type: ignore[union-attr]


def test_clock_keys_are_refused_where_they_cannot_act() -> None:
    with pytest.raises(UserError, match="profile=prfl sets the bandwidths"):
        load_config(None, [*BASE, "clock.profile=prfl", "clock.bandwidth_up=5"])
    with pytest.raises(UserError, match="shapes federated client jobs"):
        load_config(None, [*BASE, "algorithm.name=dsgd", "clock.server_up=5"])
    with pytest.raises(UserError, match="asynchronous by definition"):
        load_config(None, [*BASE, "algorithm.name=fedasync", "clock.asynchronous=true"])
