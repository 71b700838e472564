"""Asynchronous runs from the user's side (issue 12): the CLI writes simulated time on every
row, time to target, bytes, client densities and accuracy-vs-time/bytes plots that ``fedweave
report`` overlays; a run killed mid-flight resumes to the uninterrupted numbers; 1 and 2
processes give the same simulated times and metrics."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fedweave.callbacks import Callback
from fedweave.plugins import load_config
from fedweave.runner import run
from tests.conftest import latest_state

SETS = {"rounds": 8, "data.nodes": 10, "model.name": "mlp", "model.hidden": "[16]",
        "data.partition": "iid", "train.local_steps": 3, "train.batch_size": 20,
        "clock.profile": "prfl", "engine.name": "loop", "engine.threads": 1,
        "output.eval_every": 2, "train.lr": 0.2}
PRFL = {**SETS, "algorithm.name": "prfl", "algorithm.interval": 3, "algorithm.window_s": 0.01}


def _sets(values: dict[str, object]) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def _fedweave(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fedweave", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=300)


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "wall_time"}
            for r in csv.DictReader((run_dir / "metrics.csv").open())]


@pytest.mark.slow
def test_cli_async_run_records_time_to_target_bytes_densities_and_plots(tmp_path: Path) -> None:
    sets = [a for kv in _sets({**PRFL, "output.target_acc": 0.25}) for a in ("--set", kv)]
    proc = _fedweave("run", *sets, "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_dir = next((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = _rows(run_dir)
    acc = [(int(r["round"]), float(r["value"]), float(r["sim_time"])) for r in rows
           if r["node"] == "global" and r["split"] == "test" and r["metric"] == "acc"]
    first = next((rnd, t) for rnd, a, t in acc if a >= 0.25)
    assert summary["time_to_target"] == {"sim_s": first[1], "update": first[0]}
    assert summary["target_acc"] == 0.25
    assert all(float(r["sim_time"]) > 0 for r in rows)     # every row carries simulated time
    up = [float(r["value"]) for r in rows if r["metric"] == "bytes_up_total"]
    assert up == sorted(up) and up[-1] == summary["bytes_up"]
    per_update = [float(r["value"]) for r in rows
                  if r["metric"] == "bytes_up" and r["split"] == "round"]
    assert sum(per_update) == summary["bytes_up"] and 0 < max(per_update) < up[-1]
    dens = list(csv.DictReader((run_dir / "nodes" / "densities.csv").open()))
    assert [int(d["epoch"]) for d in dens] == [2, 4, 6, 8]
    assert [c for c in dens[0] if c.startswith("client")] == [f"client{i}" for i in range(10)]
    assert float(dens[0]["client9"]) == 0.1                 # PR-FL's initial densities
    for name in ("accuracy_vs_time.png", "accuracy_vs_bytes.png"):
        assert (run_dir / "plots" / name).stat().st_size > 1000
    # a synchronous run on the same clock, then both overlaid by `fedweave report`
    other = [a for kv in _sets({**SETS, "rounds": 3, "output.eval_every": 1})
             for a in ("--set", kv)]
    assert _fedweave("run", *other, "--out", "runs", cwd=tmp_path).returncode == 0
    dirs = sorted(str(p) for p in (tmp_path / "runs").iterdir())
    rep = _fedweave("report", *dirs, "--out", "report", cwd=tmp_path)
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert (tmp_path / "report" / "figures" / "accuracy-vs-simulated-time.png").is_file()
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Accuracy vs simulated time" in page and "Accuracy vs communicated bytes" in page


class Boom(Exception):
    pass


class Kill(Callback):
    def __init__(self, at: int) -> None:
        self.at = at

    def on_round(self, runner, r, result):  # type: ignore[no-untyped-def]
        if r == self.at:
            raise Boom


@pytest.mark.parametrize(("algorithm", "extra"), [
    ("prfl", {"algorithm.interval": 3, "algorithm.window_s": 0.01}),
    ("fedbuff", {"algorithm.buffer_size": 3, "algorithm.concurrency": 6,
                 "clock.speed_sigma": 0.5}),
    ("fedfix", {"algorithm.interval_s": 0.03, "clock.speed_sigma": 0.5}),
])
def test_async_run_killed_mid_flight_resumes_to_the_same_numbers(
        tmp_path: Path, algorithm: str, extra: dict[str, object]) -> None:
    over = _sets({**SETS, "rounds": 7, "algorithm.name": algorithm, **extra,
                  "output.plots": "false", "output.progress": "false"})
    full = run(load_config(None, [*over, f"output.dir={tmp_path / 'full'}"]))
    cfg = load_config(None, [*over, f"output.dir={tmp_path / 'killed'}"])
    with pytest.raises(Boom):
        run(cfg, callbacks=[Kill(4)])
    killed = next((tmp_path / "killed").iterdir())
    state = latest_state(killed)
    assert int(state["counters"][0]) == 4                   # four server updates done
    assert len(state["jobs/node"]) > 0                       # jobs in flight at the kill
    assert len(state["clock/time"]) > 0                      # and their events
    resumed = run(resume=killed)
    assert resumed.summary["final"] == full.summary["final"]
    assert resumed.summary["sim_time_s"] == full.summary["sim_time_s"]
    assert resumed.summary["bytes_up"] == full.summary["bytes_up"]
    assert _rows(killed) == _rows(full.run_dir)  # type: ignore[arg-type]
    a, b = latest_state(killed), latest_state(full.run_dir)  # type: ignore[arg-type]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, equal_nan=True, msg=key)


def test_async_run_gives_the_same_numbers_on_one_and_two_processes(tmp_path: Path) -> None:
    cfg = {"name": "two", "seed": 1, "rounds": 6,
           "data": {"dataset": "digits", "nodes": 10, "partition": "dirichlet"},
           "model": {"name": "mlp", "hidden": [16]},
           "train": {"lr": 0.1, "batch_size": 20, "local_steps": 3},
           "algorithm": {"name": "prfl", "interval": 3, "window_s": 0.01},
           "clock": {"profile": "prfl"},
           "engine": {"name": "loop", "threads": 1}, "launcher": {"timeout_s": 60},
           "output": {"plots": False, "eval_every": 2}}
    path = tmp_path / "prfl.yaml"
    path.write_text(yaml.safe_dump(cfg))
    one = _fedweave("run", str(path), "--out", "one", cwd=tmp_path)
    two = _fedweave("run", str(path), "--procs", "2", "--out", "two", cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-1500:], two.stderr[-1500:])
    dirs = [next((tmp_path / out).iterdir()) for out in ("one", "two")]
    assert _rows(dirs[0]) == _rows(dirs[1])                 # every metric, simulated time too
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in dirs)
    for key in ("sim_time_s", "bytes_up", "bytes_down", "final_densities", "client_time"):
        assert sa[key] == sb[key], key
    ta, tb = latest_state(dirs[0]), latest_state(dirs[1])
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], rtol=0, atol=0, equal_nan=True,
                                   msg=key)


def test_prfl_femnist_configs_run_on_leaf_files_with_writer_blocks(tmp_path: Path) -> None:
    from fedweave.data.partition import partition
    from fedweave.data.sources import load_dataset
    from tests.test_sources import write_leaf

    base = tmp_path / "femnist"
    write_leaf(base / "train", {f"f{i:04d}_00": 10 + i for i in range(12)}, 0)
    write_leaf(base / "test", {"f0000_00": 6, "f0001_00": 6}, 1)
    root = Path(__file__).resolve().parents[1] / "configs"
    over = [f"data.root={tmp_path}", "rounds=2", "model.name=mlp", "model.hidden=[16]",
            "output.plots=false", "output.progress=false", f"output.dir={tmp_path / 'runs'}",
            "engine.threads=1"]
    cfg = load_config(root / "prfl-femnist-noniid-prfl.yaml", over)
    assert cfg.data.partition == "natural" and cfg.data.natural_blocks
    ds = load_dataset(cfg.data, cfg.seed)
    assert ds.train_groups is not None
    shards = partition(ds.train_y, cfg.data, cfg.seed, ds.train_groups)
    writers = [sorted(set(ds.train_groups[s].tolist())) for s in shards]
    assert writers == [[k] for k in range(9)] + [[9, 10, 11]]  # blocks of ⌊12/10⌋, the rest
    res = run(cfg)
    assert res.summary["rounds_done"] == 2 and res.summary["time_to_target"] is None
    iid = load_config(root / "prfl-femnist-iid-fedavg.yaml", over)
    assert iid.data.partition == "iid" and iid.clock.profile == "prfl"
