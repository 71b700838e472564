"""Per-rank log files (``nodes/rank<r>.log``) when ranks run separately."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fedweave.records.ranklog import COLUMNS, RankLog, share_path


class StubComm:
    """Rank ``rank`` of ``world``; all_gather hands back rank 0's tensor for every rank."""

    def __init__(self, rank: int, world: int, rank0: torch.Tensor | None = None) -> None:
        self.rank, self.world, self.device = rank, world, torch.device("cpu")
        self.rank0, self.wait_s = rank0, 0.0

    def all_gather(self, tensor: torch.Tensor, what: str) -> list[torch.Tensor]:
        first = tensor if self.rank0 is None else self.rank0
        return [first.clone() for _ in range(self.world)]


def test_rank0s_run_directory_reaches_every_rank(tmp_path: Path) -> None:
    sent: list[torch.Tensor] = []

    class Recording(StubComm):
        def all_gather(self, tensor, what):
            sent.append(tensor.clone())
            return super().all_gather(tensor, what)

    assert share_path(Recording(0, 2), tmp_path / "run-1") == tmp_path / "run-1"
    assert share_path(StubComm(1, 2, rank0=sent[0]), None) == tmp_path / "run-1"
    assert share_path(StubComm(0, 2), None) is None  # rank 0 writes no run directory


def test_each_rank_logs_its_own_nodes_per_evaluated_round(tmp_path: Path) -> None:
    comm = StubComm(1, 3)
    log = RankLog(tmp_path, comm, ["node1"], "point-to-point")
    row = {"train_loss": 2.0, "val_loss": 1.9, "test_loss": 1.8, "train_acc": 0.1,
           "val_acc": 0.2, "test_acc": 0.3}
    comm.wait_s = 0.25
    log.write(0, {"node0": row, "node1": row, "node2": row}, 1.5, 0.7)
    comm.wait_s = 0.75
    log.write(1, {"node1": {**row, "test_acc": 0.4}}, 3.0, 1.4)
    lines = (tmp_path / "nodes" / "rank1.log").read_text().splitlines()
    assert lines[0] == "# rank 1 of 3: nodes node1 (point-to-point)"
    assert lines[1] == ",".join(COLUMNS)
    assert lines[2:] == ["1,node1,2.0,1.9,1.8,0.1,0.2,0.3,1.5,0.700,0.250",
                         "2,node1,2.0,1.9,1.8,0.1,0.2,0.4,3,1.400,0.500"]
    RankLog(tmp_path, comm, ["node1"], "point-to-point")  # a resume appends, no new header
    assert (tmp_path / "nodes" / "rank1.log").read_text().count("# rank") == 1


@pytest.mark.slow
def test_procs_run_writes_one_log_per_rank(tmp_path: Path) -> None:
    cfg = {"name": "ranks", "seed": 1, "rounds": 2,
           "data": {"dataset": "digits", "nodes": 3, "partition": "iid",
                    "train_samples": 300},
           "model": {"name": "logistic"}, "train": {"batch_size": 50},
           "algorithm": {"name": "dsgd"}, "topology": {"name": "ring"},
           "clock": {"asynchronous": True},
           "engine": {"name": "loop", "threads": 1},
           "launcher": {"exchange": "point_to_point", "timeout_s": 60},
           "output": {"plots": False, "dir": str(tmp_path / "runs")}}
    path = tmp_path / "ranks.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([sys.executable, "-m", "fedweave", "run", str(path), "--procs", "3"],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    for rank in range(3):
        lines = (run_dir / "nodes" / f"rank{rank}.log").read_text().splitlines()
        assert lines[0].startswith(f"# rank {rank} of 3: nodes {rank} ")
        assert [line.split(",")[:2] for line in lines[2:]] == [["1", str(rank)],
                                                               ["2", str(rank)]]
