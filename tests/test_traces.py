"""Device traces on the virtual clock: the JSON format, availability windows, FedScale's
traces converted without running code, and offline clients in synchronous and asynchronous
runs."""

from __future__ import annotations

import csv
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedweave.cli import app
from fedweave.config import ClockConfig
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.runner import run
from fedweave.sim.clock import node_profiles
from fedweave.sim.traces import (
    FORMAT,
    Availability,
    convert_fedscale,
    example_trace,
    online_cohort,
    read_trace,
)

REPO = Path(__file__).resolve().parents[1]


def write(path: Path, devices: list[dict], period: float | None = None) -> Path:
    blob: dict = {"format": FORMAT, "devices": devices}
    if period is not None:
        blob["period"] = period
    path.write_text(json.dumps(blob))
    return path


def dev(speed: float, up: float = 1e6, down: float = 2e6, available: list | None = None
        ) -> dict:
    out: dict = {"seconds_per_sample": speed, "bandwidth_up": up, "bandwidth_down": down}
    if available is not None:
        out["available"] = available
    return out


def test_profiles_follow_devices_mod_d(tmp_path: Path) -> None:
    trace = write(tmp_path / "t.json", [dev(0.1), dev(0.2, 3e6, 4e6, [[0, 10]])], period=100)
    prof = node_profiles(ClockConfig(trace=trace), 5, 0)
    assert prof.seconds_per_sample.tolist() == [0.1, 0.2, 0.1, 0.2, 0.1]
    assert prof.bandwidth_up.tolist() == [1e6, 3e6, 1e6, 3e6, 1e6]
    assert prof.bandwidth_down.tolist()[1] == 4e6
    avail = prof.availability
    assert avail is not None
    assert avail.online(1, 5.0) and not avail.online(1, 10.0) and avail.online(1, 105.0)
    assert avail.online(0, 55.0) and avail.online_nodes(50.0) == [0, 2, 4]
    assert avail.next_online(50.0) == 50.0


def test_next_online_wraps_the_period() -> None:
    avail = Availability([[(10.0, 20.0), (50.0, 60.0)], [(30.0, 40.0)]], period=100.0)
    assert avail.next_online(0.0) == 10.0
    assert avail.next_online(21.0) == 30.0
    assert avail.next_online(61.0) == 110.0
    assert avail.online_nodes(35.0) == [1] and avail.online_nodes(135.0) == [1]
    no_period = Availability([[(10.0, 20.0)]])
    assert no_period.next_online(25.0) == float("inf") and not no_period.online(0, 115.0)


class FakeClock:
    now = 0.0


def test_cohort_only_from_online_clients() -> None:
    avail = Availability([[(0.0, 5.0)], [(3.0, 9.0)], None, [(20.0, 30.0)]], period=None)
    clock = FakeClock()
    clock.now = 4.0
    assert online_cohort(avail, clock, 0, 0, 10).tolist() == [0, 1, 2]
    picked = online_cohort(avail, clock, 0, 1, 2).tolist()
    assert len(picked) == 2 and set(picked) <= {0, 1, 2}
    lonely = Availability([[(20.0, 30.0)], [(25.0, 26.0)]])
    clock.now = 4.0
    assert online_cohort(lonely, clock, 0, 0, 2).tolist() == [0] and clock.now == 20.0
    clock.now = 31.0
    with pytest.raises(UserError, match="no client is ever online again"):
        online_cohort(lonely, clock, 0, 0, 2)


@pytest.mark.parametrize(("devices", "message"), [
    ([], "at least one device"),
    ([{"bandwidth_up": 1, "bandwidth_down": 1}], "device 0 has no seconds_per_sample"),
    ([dev(-1.0)], "must be a positive finite number"),
    ([dev(0.1, available=[[5, 3]])], "start < end"),
    ([dev(0.1, available=[[0, 5], [4, 8]])], "without overlap"),
    ([dev(0.1, available=[[0]])], r"\[start, end\] pairs"),
])
def test_bad_traces_are_one_line_errors(tmp_path: Path, devices: list, message: str) -> None:
    with pytest.raises(UserError, match=message):
        read_trace(write(tmp_path / "t.json", devices))


FEDSCALE_DEVICES = {1: {"computation": 20.0, "communication": 800.0},
                    0: {"computation": 50.5, "communication": 4000.0},
                    2: {"computation": 10.0, "communication": 100.0}}
FEDSCALE_BEHAVE = {"5": {"duration": 500, "active": [0, 200], "inactive": [100, 300],
                         "finish_time": 600, "model": "SM-G"},
                   "7": {"duration": 500, "active": [50], "inactive": [80],
                         "finish_time": 400, "model": "iPhone"}}


def test_fedscale_pickles_convert(tmp_path: Path) -> None:
    cap, beh = tmp_path / "client_device_capacity", tmp_path / "client_behave_trace"
    cap.write_bytes(pickle.dumps(FEDSCALE_DEVICES))
    beh.write_bytes(pickle.dumps(FEDSCALE_BEHAVE))
    trace = convert_fedscale(cap, beh)
    assert [d.seconds_per_sample for d in trace.devices] == pytest.approx([0.1515, 0.06, 0.03])
    assert trace.devices[0].bandwidth_up == 4000 * 128 == trace.devices[0].bandwidth_down
    assert trace.devices[0].available == [(0.0, 100.0), (200.0, 300.0)]
    assert trace.devices[1].available == [(50.0, 80.0)]
    assert trace.devices[2].available == trace.devices[0].available  # behaviour k mod 2
    assert trace.period == 600
    as_json = tmp_path / "cap.json"  # a JSON export reads the same
    as_json.write_text(json.dumps({str(k): v for k, v in FEDSCALE_DEVICES.items()}))
    assert convert_fedscale(as_json).devices[1].seconds_per_sample == pytest.approx(0.06)


class Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_fedscale_pickle_naming_code_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "client_device_capacity"
    bad.write_bytes(pickle.dumps({0: {"computation": Evil(), "communication": 1.0}}))
    with pytest.raises(UserError, match=r"(posix|os|nt)\.system"):
        convert_fedscale(bad)
    assert not (Path.cwd() / "pwned").exists()


def test_shipped_example_is_the_documented_draw() -> None:
    shipped = read_trace(REPO / "configs" / "traces" / "example-300.json")
    assert shipped.to_json() == example_trace().to_json()
    assert len(shipped.devices) == 300 and shipped.period == 86400
    avail = Availability.of(shipped, 300)
    assert avail is not None
    online = np.mean([len(avail.online_nodes(h * 3600.0)) for h in range(24)])
    assert 20 < online < 150  # a fraction of the devices is online at any hour


def _trace_run(tmp_path: Path, algorithm: list[str]) -> tuple[dict, Path]:
    tmp_path.mkdir()
    trace = write(tmp_path / "t.json",
                  [dev(0.01, 1e7, 1e7, [[0, 5]]), dev(0.01, 1e7, 1e7, [[0, 1e9]]),
                   dev(0.01, 1e7, 1e7, [[2000, 1e9]]), dev(0.01, 1e7, 1e7)])
    cfg = load_config(None, [
        "rounds=3", "data.nodes=4", "data.partition=iid", "model.name=logistic",
        "output.plots=false", "output.progress=false", f"output.dir={tmp_path / 'runs'}",
        "engine.name=loop", f"clock.trace={trace}", *algorithm])
    result = run(cfg)
    assert result.run_dir is not None
    return result.summary, result.run_dir


def _metric(run_dir: Path, name: str) -> list[float]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [float(r["value"]) for r in rows if r["metric"] == name]


def _clients(run_dir: Path) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for r in csv.DictReader((run_dir / "clients.csv").open()):
        out.setdefault(int(r["round"]), set()).add(int(r["client"]))
    return out


def test_sync_and_async_runs_see_the_trace(tmp_path: Path) -> None:
    # a job takes ~3.5 s of compute; client 0 is online in [0, 5) only, client 2 from
    # 2000 s on, clients 1 and 3 always
    sync, sync_dir = _trace_run(tmp_path / "sync", ["algorithm.name=fedavg"])
    assert sync["rounds"] == 3 and sync["final"]["test_acc"] > 0.2
    assert sync["sim_time_s"] < 100  # never waited for client 2
    trained = _clients(sync_dir)
    assert all(2 not in clients for clients in trained.values())
    assert trained[1] == {0, 1, 3} and trained[3] == {1, 3}  # 0 went offline after round 1
    assert _metric(sync_dir, "clients_offline") == [0.0, 1.0, 0.0]  # its round-2 job lost
    async_, async_dir = _trace_run(tmp_path / "async", ["algorithm.name=fedbuff",
                                                        "algorithm.buffer_size=2"])
    assert async_["rounds"] == 3 and async_["sim_time_s"] < 100
    assert sum(_metric(async_dir, "clients_offline")) == 1.0  # client 0's second job


def test_converter_command_writes_a_readable_trace(tmp_path: Path) -> None:
    cap, beh = tmp_path / "client_device_capacity", tmp_path / "client_behave_trace"
    cap.write_bytes(pickle.dumps(FEDSCALE_DEVICES))
    beh.write_bytes(pickle.dumps(FEDSCALE_BEHAVE))
    out = tmp_path / "fedscale.json"
    runner = CliRunner()
    done = runner.invoke(app, ["data", "trace", str(out), "--fedscale", str(cap), "--behave",
                               str(beh)])
    assert done.exit_code == 0, done.output
    trace = read_trace(out)
    assert len(trace.devices) == 3 and trace.period == 600
    assert trace.devices[1].available == [(50.0, 80.0)]
    missing = runner.invoke(app, ["data", "trace", str(out), "--fedscale",
                                  str(tmp_path / "missing")])
    assert missing.exit_code == 2 and "missing" in missing.output
    assert runner.invoke(app, ["data", "trace", str(tmp_path / "t.txt")]).exit_code == 2
    example = tmp_path / "example.json"
    assert runner.invoke(app, ["data", "trace", str(example), "--devices", "12"]).exit_code == 0
    assert len(read_trace(example).devices) == 12
