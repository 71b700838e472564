"""The same config and seed give the same numbers however the run is started: ``fedweave
run``, ``fedweave run --procs 2`` and ``torchrun --nproc-per-node 2 -m fedweave run --set
launcher.name=distributed`` — every metric of every round, bit for bit, on the user's defaults
(CNN on digits, ``engine.name: auto``, no thread setting, no ``OMP_NUM_THREADS``: each
launcher gets fedweave's own thread count, ``fedweave.training.threads``)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fedweave.distributed.process_group import KILL_ENV

# short runs of each algorithm on its defaults; nodes kept small where the default is larger
ALGORITHMS = {
    "dsgd": ["algorithm.name=dsgd", "topology.name=ring", "data.nodes=4", "rounds=2"],
    "fedavg": ["rounds=2"],
    "fedbuff": ["algorithm.name=fedbuff", "rounds=2"],
    "prfl": ["algorithm.name=prfl", "rounds=2"],
}
COMMON = ["seed=11", "output.plots=false", "output.progress=false"]


def _fedweave(launcher: str, out: Path, sets: list[str]) -> list[tuple[str, ...]]:
    """Every metrics.csv row of the run but its wall-clock column, and the final metrics."""
    args = ["run", "--out", str(out)]
    for item in [*COMMON, *sets]:
        args += ["--set", item]
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", KILL_ENV)}
    if launcher == "run":
        cmd = [sys.executable, "-m", "fedweave", *args]
    elif launcher == "procs":
        cmd = [sys.executable, "-m", "fedweave", *args, "--procs", "2"]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", "2", "-m", "fedweave", *args,
               "--set", "launcher.name=distributed"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    with open(run_dir / "metrics.csv") as f:
        rows = [(r["round"], r["node"], r["split"], r["metric"], r["value"], r["sim_time"])
                for r in csv.DictReader(f)]
    final = json.loads((run_dir / "summary.json").read_text())["final"]
    return [*rows, tuple(f"{k}={v!r}" for k, v in sorted(final.items()))]


def _check(algorithm: str, tmp_path: Path) -> None:
    sets = ALGORITHMS[algorithm]
    one = _fedweave("run", tmp_path / "run", sets)
    assert len(one) > 10
    assert _fedweave("procs", tmp_path / "procs", sets) == one
    assert _fedweave("torchrun", tmp_path / "torchrun", sets) == one


@pytest.mark.slow  # five processes start torch: ~35 CPU-seconds
def test_dsgd_is_identical_under_every_launcher(tmp_path: Path) -> None:
    """D-SGD's nodes are split across ranks; each rank trains and evaluates whole nodes on
    the thread count of a single process (it used to differ in the low bits of the losses when
    the single process ran on torch's default threads and the ranks on one: the matrix
    products and convolution weight gradients split their sums by thread count)."""
    _check("dsgd", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["fedavg", "fedbuff", "prfl"])
def test_defaults_are_identical_under_every_launcher(algorithm: str, tmp_path: Path) -> None:
    _check(algorithm, tmp_path)
