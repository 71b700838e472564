"""The distributed engine (torch.distributed, gloo on localhost, launched like users do with
``python -m torch.distributed.run --standalone``): results equal the single-process run for any
number of processes, rank 0 alone writes, a dead or hung rank ends the run with one clear line,
and a distributed resume reaches the same final numbers."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from fedweave.distributed.placement import contiguous_assignment
from fedweave.distributed.process_group import KILL_ENV
from fedweave.distributed.trainer import greedy_assignment
from tests.conftest import latest_state

FEDERATED = {
    "name": "dist", "seed": 5, "rounds": 3,
    "data": {"dataset": "digits", "nodes": 8, "partition": "dirichlet", "alpha": 0.5},
    "model": {"name": "mlp", "hidden": [32]},
    "train": {"lr": 0.1, "batch_size": 16, "local_epochs": 1},
    "algorithm": {"name": "fedavg", "clients_per_round": 5},
    "engine": {"name": "loop", "threads": 1},
    "launcher": {"timeout_s": 30},
    "output": {"plots": False},
}
DECENTRALIZED = {
    **FEDERATED, "rounds": 2,
    "data": {"dataset": "digits", "nodes": 5, "partition": "iid"},
    "model": {"name": "logistic"},
    "train": {"lr": 0.05, "batch_size": 32, "local_epochs": 1},
    "algorithm": {"name": "dsgd"},
    "topology": {"name": "ring"},
}
# vectorized engine on uneven shards, most smaller than the batch: a rank's own largest shard
# is below the whole stack's, yet it must pad its batches to the single process's width (the
# batched reductions depend on it). Decentralized shards 14..232 with batch 200: ranks 1 and 2
# of 3 would pad to 188 and 103, and the run would drift (checked: the test fails then).
# Federated shards 84..277 with batch 250 (this one passed even with the narrower padding).
VECTORIZED = {
    "federated": {**FEDERATED, "train": {**FEDERATED["train"], "batch_size": 250},
                  "engine": {**FEDERATED["engine"], "name": "vectorized"}},
    "decentralized": {**DECENTRALIZED,
                      "data": {"dataset": "digits", "nodes": 12, "partition": "dirichlet",
                               "alpha": 0.3},
                      "train": {**DECENTRALIZED["train"], "batch_size": 200},
                      # chunks of 4 nodes: each of the 3 ranks holds one whole chunk
                      "engine": {**DECENTRALIZED["engine"], "name": "vectorized", "chunk": 4},
                      "launcher": {**DECENTRALIZED["launcher"], "exchange": "point_to_point"}},
}
# one node per rank on 3 processes, asynchronous, lossy links with latency: pending messages
# cross processes and live in the checkpoint
ASYNC_P2P = {
    **DECENTRALIZED, "data": {"dataset": "digits", "nodes": 3, "partition": "iid"},
    "algorithm": {"name": "admm_sgd"},
    "clock": {"asynchronous": True, "speeds": [1.0, 2.0, 1.5], "latency_s": 0.01,
              "link_drop": 0.2, "bandwidth_up": 1e5},
    "launcher": {**DECENTRALIZED["launcher"], "exchange": "point_to_point"},
}


def _config(tmp: Path, base: dict, algo: str, out: str, **extra: object) -> Path:
    cfg = json.loads(json.dumps(base))
    cfg["algorithm"] = {"name": algo} if algo == "centralized" else {**cfg["algorithm"],
                                                                    "name": algo}
    cfg["output"] = {**cfg["output"], "dir": str(tmp / out)}
    for key, value in extra.items():
        section, field = key.split("__")
        cfg[section][field] = value
    path = tmp / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _torchrun(procs: int, *args: str, env: dict[str, str] | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(procs), "-m", "fedweave", "run", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full_env.pop(KILL_ENV, None)
    full_env.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)


def _single(config: Path) -> Path:
    """The reference: the local engine in this process."""
    from fedweave.runner import run

    assert run(config).run_dir is not None
    return _only_run_dir(config)


def _only_run_dir(config: Path) -> Path:
    out = Path(yaml.safe_load(config.read_text())["output"]["dir"])
    dirs = [p for p in out.iterdir() if p.is_dir()]
    assert len(dirs) == 1, f"expected exactly one run directory (rank 0 only), got {dirs}"
    return dirs[0]


def _assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical final metrics and checkpoint: ranks compute exactly the single process's
    rows and reduce them in the same order (module docstring of fedweave.distributed.trainer)."""
    fa = json.loads((a / "summary.json").read_text())["final"]
    fb = json.loads((b / "summary.json").read_text())["final"]
    for key in ("test_acc", "test_loss", "train_loss", "val_acc"):
        assert fb[key] == fa[key], key
    ta = latest_state(a)
    tb = latest_state(b)
    assert ta.keys() == tb.keys()
    for key in ta:
        torch.testing.assert_close(tb[key], ta[key], rtol=0, atol=0, msg=key)
    # every metric of every round and node (consensus distance included), wall time aside
    ma, mb = ([{k: v for k, v in row.items() if k != "wall_time"}
               for row in csv.DictReader((d / "metrics.csv").open())] for d in (a, b))
    assert ma == mb


# ----------------------------------------------------------------------------- placement
def test_greedy_assignment_balances_steps_and_is_deterministic() -> None:
    work = [5, 1, 9, 3, 3, 7, 2]
    rows = greedy_assignment(work, 3)
    assert sorted(i for r in rows for i in r) == list(range(7))
    loads = [sum(work[i] for i in r) for r in rows]
    assert max(loads) - min(loads) <= max(work) and max(loads) == 10
    assert rows == greedy_assignment(work, 3)
    assert greedy_assignment([4, 4], 3) == [[0], [1], []]  # more ranks than rows


def test_contiguous_assignment() -> None:
    assert contiguous_assignment(5, 2) == [[0, 1, 2], [3, 4]]
    assert contiguous_assignment(2, 3) == [[0], [1], []]


# ----------------------------------------------------------------------------- equivalence
@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Single-process runs (local engine) of every configuration below."""
    tmp = tmp_path_factory.mktemp("reference")
    from fedweave.algorithms import ALGORITHMS

    runs = {algo: _single(_config(tmp, FEDERATED, algo, f"single-{algo}"))
            for algo in ("fedavg", "scaffold", "centralized")}
    for algo in ("dsgd", "pdmm_isvr"):
        if algo in ALGORITHMS.names():
            runs[algo] = _single(_config(tmp, DECENTRALIZED, algo, f"single-{algo}"))
    runs["async"] = _single(_config(tmp, ASYNC_P2P, "admm_sgd", "single-async"))
    runs["vectorized-federated"] = _single(_config(tmp, VECTORIZED["federated"], "fedavg",
                                                   "single-vec-fed"))
    runs["vectorized-decentralized"] = _single(_config(tmp, VECTORIZED["decentralized"], "dsgd",
                                                       "single-vec-dec"))
    return runs


@pytest.mark.parametrize(("algo", "procs"), [
    ("fedavg", 2), pytest.param("fedavg", 3, marks=pytest.mark.slow),
    ("scaffold", 2), pytest.param("scaffold", 3, marks=pytest.mark.slow),
    ("centralized", 2)])  # centralized: one row, so rank 1 trains nothing and only receives
def test_federated_equals_single_process(reference: dict[str, Path], tmp_path: Path, algo: str,
                                         procs: int) -> None:
    config = _config(tmp_path, FEDERATED, algo, "dist")
    proc = _torchrun(procs, str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run_dir(config)  # rank 0 alone wrote
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["engine"].startswith("distributed")
    _assert_same_run(reference[algo], run_dir)


@pytest.mark.parametrize(("algo", "procs", "exchange"), [
    ("dsgd", 2, "all_gather"), ("dsgd", 2, "point_to_point"),
    pytest.param("pdmm_isvr", 3, "all_gather", marks=pytest.mark.slow),
    pytest.param("pdmm_isvr", 3, "point_to_point", marks=pytest.mark.slow)])
def test_decentralized_equals_single_process(reference: dict[str, Path], tmp_path: Path,
                                             algo: str, procs: int, exchange: str) -> None:
    config = _config(tmp_path, DECENTRALIZED, algo, "dist", launcher__exchange=exchange)
    proc = _torchrun(procs, str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run_dir(config)
    assert json.loads((run_dir / "summary.json").read_text())["neighbour_exchange"] == exchange
    _assert_same_run(reference[algo], run_dir)


@pytest.mark.parametrize(("kind", "algo", "procs"), [
    ("federated", "fedavg", 2),
    pytest.param("decentralized", "dsgd", 3, marks=pytest.mark.slow)])
def test_vectorized_engine_equals_single_process(reference: dict[str, Path], tmp_path: Path,
                                                 kind: str, algo: str, procs: int) -> None:
    config = _config(tmp_path, VECTORIZED[kind], algo, "dist")
    proc = _torchrun(procs, str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_run(reference[f"vectorized-{kind}"], _only_run_dir(config))


@pytest.mark.slow
def test_one_node_per_rank_async_lossy_point_to_point(reference: dict[str, Path],
                                                      tmp_path: Path) -> None:
    """A real peer-to-peer run: 3 processes, one node each, asynchronous with latency and
    lost exchanges; messages in flight at the end of a round are in the checkpoint."""
    config = _config(tmp_path, ASYNC_P2P, "admm_sgd", "dist")
    proc = _torchrun(3, str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _only_run_dir(config)
    _assert_same_run(reference["async"], run_dir)
    state = latest_state(run_dir)
    assert len(state["in_flight/time"]) > 0
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert any(r["metric"] == "exchanges_lost" and float(r["value"]) > 0 for r in rows)


# ----------------------------------------------------------------------------- faults, resume
MESSAGE = re.compile(r"error: distributed run stopped: (.*?) \(rank (\d+) noticed .*?\); "
                     r"last completed round (\d+);")


@pytest.mark.slow
def test_killed_rank_stops_every_rank_and_resume_matches(reference: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """Rank 1 of 3 exits after round 1: ranks 0 and 2 stop at once with the one-line message
    (naming rank 1 and round 1), exit 1; resuming with 2 processes gives the reference."""
    config = _config(tmp_path, FEDERATED, "fedavg", "killed")
    start = time.monotonic()
    proc = _torchrun(3, str(config), env={KILL_ENV: "1:1"})
    wall = time.monotonic() - start
    assert proc.returncode != 0
    lines = list(MESSAGE.finditer(proc.stderr))
    assert {int(m.group(2)) for m in lines} == {0, 2}, proc.stderr[-3000:]
    assert all(m.group(3) == "1" for m in lines)
    assert any(m.group(1) == "rank 1 died or hung" for m in lines)
    assert wall < 30 + 15  # launcher.timeout_s + start-up margin; in practice ~ start-up + 1 round
    run_dir = _only_run_dir(config)
    assert json.loads((run_dir / "checkpoints" / "latest.json").read_text())["round"] == 1

    resumed = _torchrun(2, "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert _only_run_dir(config) == run_dir
    _assert_same_run(reference["fedavg"], run_dir)


@pytest.mark.slow  # five processes; the federated kill below keeps the property fast
def test_killed_rank_in_point_to_point_exchange_and_resume_on_fewer_ranks(
        reference: dict[str, Path], tmp_path: Path) -> None:
    """Nodes split over 3 ranks: rank 1 exits after round 1, its neighbours notice in the
    neighbour exchange and every survivor names rank 1; the full checkpoint resumes on 2
    processes to the single-process result."""
    config = _config(tmp_path, DECENTRALIZED, "pdmm_isvr", "killed",
                     launcher__exchange="point_to_point")
    proc = _torchrun(3, str(config), env={KILL_ENV: "1:1"})
    assert proc.returncode != 0
    lines = list(MESSAGE.finditer(proc.stderr))
    assert {int(m.group(2)) for m in lines} == {0, 2}, proc.stderr[-3000:]
    assert all(m.group(1) == "rank 1 died or hung" and m.group(3) == "1" for m in lines)
    run_dir = _only_run_dir(config)
    resumed = _torchrun(2, "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_run(reference["pdmm_isvr"], run_dir)


@pytest.mark.slow
def test_hung_rank_times_out(tmp_path: Path) -> None:
    """Rank 1 hangs (alive, sockets open) in round 2: rank 0 gives up after launcher.timeout_s."""
    timeout = 4.0
    config = _config(tmp_path, FEDERATED, "fedavg", "hung", launcher__timeout_s=timeout)
    start = time.monotonic()
    proc = _torchrun(2, str(config), env={KILL_ENV: "1:1:hang"})
    wall = time.monotonic() - start
    assert proc.returncode != 0
    lines = list(MESSAGE.finditer(proc.stderr))
    rank0 = [m for m in lines if m.group(2) == "0"]
    assert rank0 and rank0[0].group(1) == "rank 1 died or hung", proc.stderr[-3000:]
    assert rank0[0].group(3) == "1"
    assert wall < timeout + 25  # start-up (~10 s on 2 cores) + timeout + watchdog grace


@pytest.mark.slow  # three launchers and three ranks; the 3-rank run above checks the same result
def test_hosts_commands_start_a_peer_to_peer_run(reference: dict[str, Path],
                                                 tmp_path: Path) -> None:
    """The commands `fedweave hosts` prints for a 3-host hosts.json, started side by side on
    this machine as if on 3 hosts: one node per host, the single-process result."""
    from fedweave.distributed.launcher import torchrun_commands

    port = 29000 + os.getpid() % 1000  # the first entry's port is the rendezvous
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"hosts": [
        {"name": f"node{i}", "addr": "127.0.0.1", "port": port + i} for i in range(3)]}))
    config = _config(tmp_path, ASYNC_P2P, "admm_sgd", "hosts")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(KILL_ENV, None)
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run",
                               *cmd.split()[1:]], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for _, cmd in torchrun_commands(hosts, str(config))]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1][-2000:] for o in outs]
    _assert_same_run(reference["async"], _only_run_dir(config))
