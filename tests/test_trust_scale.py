"""Issue 10, scale through the CLI: 100,000 synthetic clients with 1,000 per round run a round
in bounded memory (beyond the dataset itself, a few KB per client: shards and sizes, no
per-client model state for FedAvg), and a run that would not fit says so up front with its
estimate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from trust_cli import assert_one_line_error, cli_env, fedweave, run_dirs

# ten samples per device (eight train, two test), 60 features: 248 bytes of data per sample
SMALL_DEVICES = ["--set", "data.dataset=synthetic", "--set", "data.partition=natural",
                 "--set", "data.synthetic.samples_mean=0",
                 "--set", "data.synthetic.samples_sigma=0",
                 "--set", "data.synthetic.min_samples=9"]
RUN = [*SMALL_DEVICES, "--set", "algorithm.clients_per_round=1000", "--set", "rounds=1",
       "--set", "model.name=logistic", "--set", "engine.name=vectorized",
       "--set", "engine.threads=1", "--set", "output.plots=false"]
MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)")


def peak_rss_mib(tmp_path: Path, nodes: int) -> float:
    """Peak resident memory of one ``fedweave run`` (its own wrapper process, so nothing else
    the test process started is counted)."""
    out = tmp_path / f"n{nodes}"
    proc = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "fedweave",
                           "run", *RUN, "--set", f"data.nodes={nodes}", "--out", str(out)],
                          cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = run_dirs(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["rounds_done"] == 1 and summary["final"]["test_acc"] > 0
    return int(proc.stdout.split()[-1]) / 1024


@pytest.mark.slow  # two subprocesses building 10k and 100k clients (~30 s of CPU)
def test_100k_clients_run_a_round_in_bounded_memory(tmp_path: Path) -> None:
    small, large = peak_rss_mib(tmp_path, 10_000), peak_rss_mib(tmp_path, 100_000)
    per_client = (large - small) * 2**20 / 90_000
    print(f"peak RSS: 10k clients {small:.0f} MiB, 100k clients {large:.0f} MiB "
          f"({per_client:.0f} bytes per added client, 2480 of them the client's own data)")
    assert per_client < 6000  # float64 generation, per-client tensor work would exceed it
    assert large < 1500


def test_data_that_would_not_fit_says_so_up_front(tmp_path: Path) -> None:
    """A million devices of 2000 samples: ~460 GiB, refused before anything is allocated."""
    proc = fedweave("run", *RUN, "--set", "data.nodes=1000000",
                    "--set", "data.synthetic.min_samples=2000", "--out", str(tmp_path / "runs"),
                    cwd=tmp_path)
    assert_one_line_error(proc, "data.nodes=1000000", "GiB of memory", "GiB are available",
                          "lower data.nodes")
    assert not run_dirs(tmp_path / "runs")


def test_a_cohort_that_would_not_fit_says_so_up_front(tmp_path: Path) -> None:
    """1000 clients of a 17M-parameter MLP trained at once: ~380 GiB of parameter state."""
    proc = fedweave("run", "--set", "model.name=mlp", "--set", "model.hidden=[4096,4096]",
                    "--set", "data.nodes=1000", "--set", "data.partition=iid",
                    "--set", "data.min_samples=1", "--set", "rounds=1",
                    "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert_one_line_error(proc, "training 1000 models of 17088522 parameters at once",
                          "GiB are available", "algorithm.clients_per_round")
    assert not run_dirs(tmp_path / "runs")
