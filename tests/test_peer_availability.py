"""Decentralized peers under a device trace's online windows (``clock.trace``, JSON): a node
offline for a whole synchronous run is a node whose links are all down, an offline window
skips exactly the rounds that start in it, an asynchronous node's clock stops while it is
offline, the engines and a resume agree, and no node ever online is one clear line."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch

from fedweave.algorithms.decentralized.base import DecentralizedAlgorithm
from fedweave.config import Config
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.runner import Runner, run
from fedweave.sim.traces import FORMAT, Availability
from tests.conftest import resumes_exactly

SPS = 0.001  # seconds per sample of every device


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trace(path: Path, windows: list[list[list[float]] | None],
          period: float | None = None) -> Path:
    """One device per node (equal speeds, fast links); ``windows[i]``: node i's online
    windows (None: always online)."""
    devices = []
    for w in windows:
        device: dict = {"seconds_per_sample": SPS, "bandwidth_up": 1e9, "bandwidth_down": 1e9}
        if w is not None:
            device["available"] = w
        devices.append(device)
    blob: dict = {"format": FORMAT, "devices": devices}
    if period is not None:
        blob["period"] = period
    path.write_text(json.dumps(blob))
    return path


def peers(*overrides: str) -> Config:
    """D-SGD on a 4-node ring, digits, logistic regression: 11 steps of 32 samples a round."""
    base = ["data.dataset=digits", "data.nodes=4", "data.partition=iid", "model.name=logistic",
            "rounds=3", "train.lr=0.1", "train.batch_size=32", "algorithm.name=dsgd",
            "topology.name=ring", "output.plots=false", "output.progress=false",
            "engine.name=loop"]
    return load_config(None, base + list(overrides))


def algorithm(cfg: Config) -> DecentralizedAlgorithm:
    algo = Runner(cfg, None).algo
    assert isinstance(algo, DecentralizedAlgorithm)
    return algo


def rounds(algo: DecentralizedAlgorithm, count: int) -> list[dict]:
    """Each round's step counts, nodes up, virtual start and result."""
    out = []
    for r in range(count):
        start = algo.clock.now
        res = algo.round(r)
        out.append({"steps": algo.steps_done.clone(), "up": algo.up.clone(), "start": start,
                    "res": res})
    return out


def test_a_node_offline_all_run_keeps_its_model_and_equals_a_node_whose_links_are_down(
        tmp_path: Path) -> None:
    offline = trace(tmp_path / "off.json", [[[0, 1e12]], None, None, []])
    algo = algorithm(peers(f"clock.trace={offline}"))
    seen = rounds(algo, 3)
    s = algo.S
    assert [r["steps"].tolist() for r in seen] == [[s, s, s, 0], [2 * s, 2 * s, 2 * s, 0],
                                                 [3 * s, 3 * s, 3 * s, 0]]
    assert torch.equal(algo.x[3], algo.ctx.init_params)  # never stepped, never mixed
    assert [r["res"].extras["nodes_offline"] for r in seen] == [1.0, 1.0, 1.0]
    assert algo.W[3, 3] == 1 and bool((algo.W[3, :3] == 0).all())
    torch.testing.assert_close(algo.W.sum(1).double(), torch.ones(4, dtype=torch.float64))
    # the same run where node 3's links all time out at their first exchange (swap_timeout)
    slow = tmp_path / "slow.csv"
    slow.write_text("node,seconds_per_sample,bandwidth_up,bandwidth_down\n"
                    f"0,{SPS},1e9,1e9\n1,{SPS},1e9,1e9\n2,{SPS},1e9,1e9\n3,{SPS},1e3,1e3\n")
    cut = algorithm(peers(f"clock.trace={slow}", "clock.swap_timeout=1.0"))
    cut_seen = rounds(cut, 3)
    assert cut_seen[0]["res"].extras["edges_dropped"] == 2
    assert torch.equal(cut.x[:3], algo.x[:3])  # bit for bit
    assert torch.equal(cut.W[:3, :3], algo.W[:3, :3])
    for a, b in zip(seen, cut_seen, strict=True):
        assert torch.equal(a["res"].node_train["loss"][:3], b["res"].node_train["loss"][:3])


def test_an_offline_window_skips_exactly_the_rounds_that_start_in_it(tmp_path: Path) -> None:
    probe = algorithm(peers("rounds=5"))
    step = float(probe.tau.max())  # bandwidths 1e9, no latency: a round lasts ~S steps
    length = probe.S * step
    # node 1 is offline from the middle of round 1 to the middle of round 3: it misses the
    # starts of rounds 2 and 3
    path = trace(tmp_path / "w.json",
                 [None, [[0, 1.5 * length], [3.5 * length, 1e12]], None, None])
    algo = algorithm(peers("rounds=5", f"clock.trace={path}"))
    seen = rounds(algo, 5)
    s = algo.S
    assert [int(r["steps"][1]) for r in seen] == [s, 2 * s, 2 * s, 2 * s, 3 * s]
    assert [int(r["steps"][0]) for r in seen] == [s * (k + 1) for k in range(5)]
    assert [bool(r["up"][1]) for r in seen] == [True, True, False, False, True]
    assert [r["res"].extras["nodes_offline"] for r in seen] == [0, 0, 1, 1, 0]
    assert seen[3]["start"] == pytest.approx(3 * length, rel=1e-3)
    # a periodic window: node 2 online in the first half of every period of 2 rounds
    periodic = trace(tmp_path / "p.json", [None, None, [[0, 0.5 * length]], None],
                     period=2 * length)
    algo = algorithm(peers("rounds=5", f"clock.trace={periodic}"))
    assert [int(r["steps"][2]) for r in rounds(algo, 5)] == [s, s, 2 * s, 2 * s, 3 * s]


def test_an_asynchronous_node_stops_its_clock_while_offline(tmp_path: Path) -> None:
    probe = algorithm(peers("clock.asynchronous=true"))
    tau = float(probe.tau[1])
    length = probe.S * tau
    gap = 5.0 * tau  # node 1 offline for 5 of its steps in round 1
    path = trace(tmp_path / "a.json",
                 [None, [[0, 1.2 * length], [1.2 * length + gap, 1e12]], None, None])
    algo = algorithm(peers("clock.asynchronous=true", f"clock.trace={path}"))
    seen = rounds(algo, 3)
    s = algo.S
    assert seen[0]["steps"].tolist() == [s, s, s, s]
    assert [int(r["steps"][1]) for r in seen] == [s, 2 * s - 5, 3 * s - 5]
    assert [int(r["steps"][0]) for r in seen] == [s, 2 * s, 3 * s]
    # its messages to and from the neighbours during the gap are lost, the rest arrive
    assert seen[0]["res"].extras["exchanges_lost"] == 0
    assert seen[1]["res"].extras["exchanges_lost"] > 0
    # every one of node 1's steps happened while it was online
    avail = algo.profile.availability
    assert avail is not None
    times = [algo._step_time(1, k) for k in range(3 * s)]
    assert all(avail.online(1, t) for t in times)
    first = math.ceil(1.2 * s) - 1  # the first step whose compute ends after the window
    assert times[first - 1] == pytest.approx(first * tau)
    assert times[first] == pytest.approx((first + 1) * tau + gap)


def test_an_offline_asynchronous_node_neither_sends_nor_receives(tmp_path: Path) -> None:
    # two-way swaps and epoch swaps: node 1 is offline through all of round 2
    over = ["clock.asynchronous=true", "algorithm.exchange=two_way", "algorithm.epoch_swap=true"]
    probe = algorithm(peers(*over))
    length = probe.S * float(probe.tau.max())
    path = trace(tmp_path / "s.json",
                 [None, [[0, 0.999 * length], [2.001 * length, 1e12]], None, None])
    algo = algorithm(peers(*over, f"clock.trace={path}"))
    mine = algo.own == 1  # node 1's slots: the copies it received and its outbox
    algo.round(0)
    before = (algo.x[1].clone(), algo.copies["x"][mine].clone(), algo.outbox["x"][mine].clone())
    res = algo.round(1)
    assert int(algo.steps_done[1]) == algo.S - 1  # its last step of round 1 waits
    assert torch.equal(algo.x[1], before[0])
    assert torch.equal(algo.copies["x"][mine], before[1])
    assert torch.equal(algo.outbox["x"][mine], before[2])
    assert res.extras["exchanges_lost"] > 0 and res.extras["nodes_offline"] == 1
    assert bool((algo.steps_done[[0, 2, 3]] == 2 * algo.S).all())
    algo.round(2)
    assert not torch.equal(algo.x[1], before[0])  # back online: it trains again


def test_online_clock_inverts_the_online_time() -> None:
    avail = Availability([None, [(10.0, 20.0), (50.0, 60.0)], []], period=100.0)
    assert avail.online_clock(0, 7.5) == 7.5
    assert avail.online_clock(1, 5.0) == 15.0
    assert avail.online_clock(1, 10.0) == 50.0  # a window's end is the next one's start
    assert avail.online_clock(1, 25.0) == 115.0
    assert avail.online_clock(2, 1.0) == float("inf")
    once = Availability([[(0.0, 4.0)]])
    assert once.online_clock(0, 3.0) == 3.0 and once.online_clock(0, 4.0) == float("inf")


@pytest.mark.parametrize("clock", [[], ["clock.asynchronous=true"]])
def test_loop_and_vectorized_engines_agree_under_online_windows(tmp_path: Path,
                                                                clock: list[str]) -> None:
    probe = algorithm(peers())
    length = probe.S * float(probe.tau.max())
    path = trace(tmp_path / "e.json", [None, [[0, 0.7 * length], [1.6 * length, 1e12]],
                                       [[0.3 * length, 2.4 * length]], None])
    out = []
    for engine in ("loop", "vectorized"):
        algo = algorithm(peers(f"engine.name={engine}", f"clock.trace={path}", *clock))
        assert algo.ctx.engine.name == engine
        out.append((algo, rounds(algo, 3)))
    (a, ra), (b, rb) = out
    assert [r["steps"].tolist() for r in ra] == [r["steps"].tolist() for r in rb]
    assert [r["res"].extras for r in ra] == [r["res"].extras for r in rb]
    assert int(ra[-1]["steps"].min()) < int(ra[-1]["steps"].max())  # the windows acted
    assert torch.equal(a.x, b.x)


@pytest.mark.parametrize("clock", [[], ["clock.asynchronous=true", "clock.latency_s=0.003"]])
def test_killed_and_resumed_run_under_online_windows_ends_the_same(tmp_path: Path,
                                                                    clock: list[str]) -> None:
    probe = algorithm(peers())
    length = probe.S * float(probe.tau.max())
    path = trace(tmp_path / "r.json", [None, [[0, 1.3 * length]], [[0.4 * length, 0.9 * length]],
                                       None], period=3 * length)
    resumes_exactly(tmp_path / "runs", peers, f"clock.trace={path}", *clock)


@pytest.mark.parametrize("clock", [[], ["clock.asynchronous=true"]])
def test_no_node_ever_online_is_one_clear_line(tmp_path: Path, clock: list[str]) -> None:
    never = trace(tmp_path / "n.json", [[], [], [], []])
    line = "clock.trace: no node is ever online again; give the devices later windows or a period"
    with pytest.raises(UserError, match=rf"^{re.escape(line)}$"):
        run(peers(f"clock.trace={never}", *clock), write=False)


def test_a_synchronous_round_waits_for_the_first_online_node(tmp_path: Path) -> None:
    late = trace(tmp_path / "late.json", [[[100, 1e12]], [[200, 1e12]], [[100, 1e12]], []])
    algo = algorithm(peers(f"clock.trace={late}"))
    seen = rounds(algo, 2)
    first = seen[0]["res"]
    assert first.sim_time == pytest.approx(100 + algo.S * float(algo.tau.max()), rel=1e-6)
    assert seen[0]["up"].tolist() == [True, False, True, False]
    assert first.extras["nodes_offline"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(("asynchronous", "exchange"), [(True, "point_to_point"),
                                                       (False, "all_gather")])
def test_two_processes_equal_one_under_online_windows(tmp_path: Path, asynchronous: bool,
                                                      exchange: str) -> None:
    """Peers under windows on 2 processes (``torchrun``): the single process's metrics and
    checkpoint, bit for bit (offline nodes and messages lost to offline ends are decided the
    same way on every process)."""
    from tests.test_distributed import (
        DECENTRALIZED,
        _assert_same_run,
        _config,
        _only_run_dir,
        _single,
        _torchrun,
    )

    path = trace(tmp_path / "d.json", [None, [[0, 0.2], [0.5, 1e12]], [[0.1, 0.6]], None,
                                       [[0.3, 1e12]]])
    base = {**DECENTRALIZED, "clock": {"asynchronous": asynchronous, "latency_s": 0.002,
                                       "trace": str(path)},
            "launcher": {"timeout_s": 30, "exchange": exchange}}
    single = _single(_config(tmp_path, base, "dsgd", "one"))
    config = _config(tmp_path, base, "dsgd", "two")
    proc = _torchrun(2, str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_run(single, _only_run_dir(config))
    with (single / "metrics.csv").open() as f:
        lost = [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "exchanges_lost"]
    offline = [float(r["value"]) for r in csv.DictReader((single / "metrics.csv").open())
               if r["metric"] == "nodes_offline"]
    # at 0 nodes 2 and 4 are offline; round 2 starts at 0.288 s (async: 2 rounds of 9 steps of
    # 32 ms) with 1 and 4 offline, or at 0.306 s (sync: each step also waits 2 ms of
    # latency), when 4 is back
    assert len(lost) == 2 and offline == ([2.0, 2.0] if asynchronous else [2.0, 1.0])
    if asynchronous:
        assert sum(lost) > 0  # the windows cost messages
