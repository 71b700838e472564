"""Smoke test of the benchmark suite: the quick suite's smallest row and the JSON schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_fashion

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~10 s alone: one subprocess loading Fashion-MNIST
@needs_fashion
def test_quick_smallest_row_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    row = "cross-device-logistic:fedweave-vectorized"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--rows", row,
         "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["device"] == "cpu"
    assert set(report) >= {"command", "cpus", "torch", "rows", "suite_s"}
    r = report["rows"][row]
    assert "error" not in r, r
    assert r["engine"] == "vectorized"
    assert r["wall_s"] > 0 and r["process_s"] >= r["wall_s"]
    assert r["peak_rss_mb"] > 0
    assert 0.0 <= r["test_acc"] <= 1.0
    assert len(r["round_s"]) == 2
    assert "cross-device-logistic" in proc.stdout  # the table


def test_quick_baseline_rows_run(tmp_path: Path) -> None:
    """The plain loop and the centralized limit build their configs like fedweave's rows (the
    built-in algorithms registered first)."""
    for row in ("cross-device-logistic:plain-sequential",
                "cross-device-logistic:centralized-limit"):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--rows", row,
             "--json", str(tmp_path / "bench.json")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "ERROR" not in proc.stdout, proc.stdout
