import math
from pathlib import Path

import numpy as np
import pytest
import torch

from fedweave.config import ClockConfig
from fedweave.errors import UserError
from fedweave.sim.clock import (
    MB,
    PRFL_DOWNLOAD,
    PRFL_UPLOAD,
    NodeProfile,
    client_dropped,
    exchange_late,
    job_time,
    link_dropped,
    node_profiles,
    prfl_profiles,
    transfer_time,
)
from fedweave.sim.scheduler import Scheduler


def test_constant_profiles():
    p = node_profiles(ClockConfig(seconds_per_sample=0.01, bandwidth_up=5.0), 4, seed=0)
    assert p.seconds_per_sample.dtype == torch.float64
    assert p.seconds_per_sample.tolist() == [0.01] * 4
    assert p.bandwidth_up.tolist() == [5.0] * 4
    assert p.bandwidth_down.tolist() == [1e9] * 4


def test_lognormal_spread_is_deterministic_and_right():
    cfg = ClockConfig(seconds_per_sample=1.0, speed_sigma=0.5)
    a = node_profiles(cfg, 4000, seed=1)
    assert torch.equal(a.seconds_per_sample, node_profiles(cfg, 4000, seed=1).seconds_per_sample)
    assert not torch.equal(a.seconds_per_sample, node_profiles(cfg, 4000, 2).seconds_per_sample)
    logs = a.seconds_per_sample.log()
    assert abs(float(logs.mean())) < 0.05
    assert float(logs.std()) == pytest.approx(0.5, rel=0.05)


def test_explicit_speeds():
    p = node_profiles(ClockConfig(seconds_per_sample=1.0, speeds=[1.0, 2.0, 4.0]), 3, seed=0)
    assert p.seconds_per_sample.tolist() == [1.0, 0.5, 0.25]
    with pytest.raises(UserError, match=r"clock\.speeds"):
        node_profiles(ClockConfig(speeds=[1.0, 2.0]), 3, seed=0)
    with pytest.raises(UserError, match="positive"):
        node_profiles(ClockConfig(speeds=[1.0, 0.0]), 2, seed=0)


def test_trace_file(tmp_path: Path):
    trace = tmp_path / "trace.csv"
    trace.write_text("node,seconds_per_sample,bandwidth_up\n1,0.2,100\n0,0.1,50\n")
    p = node_profiles(ClockConfig(trace=trace, bandwidth_down=7.0), 2, seed=0)
    assert p.seconds_per_sample.tolist() == [0.1, 0.2]
    assert p.bandwidth_up.tolist() == [50.0, 100.0]
    assert p.bandwidth_down.tolist() == [7.0, 7.0]
    full = tmp_path / "full.csv"
    full.write_text("node,seconds_per_sample,bandwidth_up,bandwidth_down\n0,1,2,3\n")
    p = node_profiles(ClockConfig(trace=full), 1, seed=0)
    assert (p.seconds_per_sample.item(), p.bandwidth_up.item(), p.bandwidth_down.item()) == (
        1.0, 2.0, 3.0,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("node,seconds_per_sample\n0,0.1\n", "has 1 nodes"),
        ("node,seconds_per_sample\n0,0.1\n0,0.2\n", "repeated"),
        ("node,seconds_per_sample\n0,0.1\n5,0.2\n", "repeated or not in"),
        ("node,speed\n0,0.1\n1,0.2\n", "expected columns"),
        ("node,seconds_per_sample\n0,abc\n1,0.2\n", "expected columns"),
        ("node,seconds_per_sample\n0,0\n1,0.2\n", "positive"),
    ],
)
def test_bad_trace(tmp_path: Path, text, match):
    trace = tmp_path / "t.csv"
    trace.write_text(text)
    with pytest.raises(UserError, match=match):
        node_profiles(ClockConfig(trace=trace), 2, seed=0)


def test_missing_trace(tmp_path: Path):
    with pytest.raises(UserError, match="not found"):
        node_profiles(ClockConfig(trace=tmp_path / "nope.csv"), 2, seed=0)


def test_prfl_profiles():
    p = prfl_profiles(seed=0)
    assert p.bandwidth_down.shape == (10,)
    ratio_down = p.bandwidth_down / (torch.tensor(PRFL_DOWNLOAD, dtype=torch.float64) * MB)
    ratio_up = p.bandwidth_up / (torch.tensor(PRFL_UPLOAD, dtype=torch.float64) * MB)
    # mean of 20 draws of exp(N(0, .3²)): E = exp(.045) ≈ 1.046, sd ≈ .07
    for ratio in (ratio_down, ratio_up):
        assert ((ratio > 0.8) & (ratio < 1.35)).all()
    assert torch.equal(prfl_profiles(seed=0).bandwidth_up, p.bandwidth_up)
    assert not torch.equal(prfl_profiles(seed=1).bandwidth_up, p.bandwidth_up)
    assert prfl_profiles(n=12, seed=0).bandwidth_down.shape == (12,)


def test_job_time_arithmetic():
    p = NodeProfile(
        seconds_per_sample=torch.tensor([0.01, 0.02], dtype=torch.float64),
        bandwidth_up=torch.tensor([100.0, 50.0], dtype=torch.float64),
        bandwidth_down=torch.tensor([200.0, 400.0], dtype=torch.float64),
    )
    t = job_time(p, 1, samples=100, bytes_down=800, bytes_up=100, latency_s=0.5)
    assert isinstance(t, float)
    assert t == pytest.approx((0.5 + 2.0) + 2.0 + (0.5 + 2.0))
    ts = job_time(p, torch.tensor([0, 1]), 100, 800, 100)
    assert torch.allclose(ts, torch.tensor([4.0 + 1.0 + 1.0, 2.0 + 2.0 + 2.0], dtype=torch.float64))
    assert transfer_time(1000, 250.0) == 4.0
    assert transfer_time(1000, 250.0, latency_s=1.0) == 5.0


def test_scheduler_order_ties_and_state_round_trip():
    q = Scheduler(("a", "b"))
    q.at(2.0, "a", 5)
    q.at(1.0, "b", 3, tag=7)
    q.at(1.0, "a", 1, value=0.25)
    q.at(0.5, "b", 9)
    q.at(1.0 + 1e-12, "a", 0)
    assert len(q) == 5 and q.peek().time == 0.5
    assert q.pop().node == 9 and q.now == 0.5
    copy = Scheduler(("a", "b"))
    copy.load_state(q.state())
    together = q.pop_together()  # the three at t = 1 (within the relative tolerance), in order
    assert [(e.node, e.tag, e.value) for e in together] == [(3, 7, 0.0), (1, 0, 0.25), (0, 0, 0.0)]
    assert [e.node for e in copy.pop_together()] == [3, 1, 0]
    assert q.pop().node == 5 and q.now == 2.0 and len(q) == 0
    with pytest.raises(IndexError):
        q.pop()
    with pytest.raises(ValueError):
        q.at(0.0, "c", 0)


def test_client_dropout_rate_and_determinism():
    cfg = ClockConfig(client_dropout=0.2)
    draws = [client_dropped(cfg, 7, r, k) for r in range(200) for k in range(50)]
    assert np.mean(draws) == pytest.approx(0.2, abs=0.02)
    assert draws == [client_dropped(cfg, 7, r, k) for r in range(200) for k in range(50)]
    assert draws != [client_dropped(cfg, 8, r, k) for r in range(200) for k in range(50)]
    assert not any(client_dropped(ClockConfig(), 7, r, 0) for r in range(1000))


def test_link_drop_rate_and_symmetry():
    cfg = ClockConfig(link_drop=0.3)
    pairs = [(t, i, j) for t in range(100) for i in range(10) for j in range(i + 1, 10)]
    draws = [link_dropped(cfg, 1, t, i, j) for t, i, j in pairs]
    assert np.mean(draws) == pytest.approx(0.3, abs=0.03)
    assert draws == [link_dropped(cfg, 1, t, j, i) for t, i, j in pairs]
    independent = [client_dropped(ClockConfig(client_dropout=0.3), 1, t, i) for t, i, _ in pairs]
    assert draws != independent


def test_exchange_late():
    p = NodeProfile(
        seconds_per_sample=torch.ones(3, dtype=torch.float64),
        bandwidth_up=torch.tensor([100.0, 10.0, 100.0], dtype=torch.float64),
        bandwidth_down=torch.tensor([100.0, 100.0, 100.0], dtype=torch.float64),
    )
    cfg = ClockConfig(swap_timeout=2.0, latency_s=0.5)
    assert not exchange_late(cfg, p, 0, 0, 2, nbytes=150)  # 0.5 + 1.5 = 2.0
    assert exchange_late(cfg, p, 0, 0, 2, nbytes=151)
    assert exchange_late(cfg, p, 0, 0, 1, nbytes=20)  # 0.5 + 20/10 > 2
    assert exchange_late(cfg, p, 0, 1, 0, nbytes=20)
    assert not exchange_late(ClockConfig(), p, 0, 0, 1, nbytes=math.inf)
