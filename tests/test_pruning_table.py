"""benchmarks/influence_pruning.py: the table's cells (mean ± std over seeds) and the marks
against random; one tiny end-to-end row on digits."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("influence_pruning",
                                                  ROOT / "benchmarks" / "influence_pruning.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_table_cells_and_marks() -> None:
    b = bench()
    rows = []
    for seed, (all_, rnd, good, bad, same) in enumerate([(0.80, 0.70, 0.76, 0.60, 0.71),
                                                         (0.82, 0.72, 0.78, 0.62, 0.69)]):
        rows += [{"seed": seed, "noise": 0.2, "scorer": "all", "ratio": 1.0, "test_acc": all_},
                 {"seed": seed, "noise": 0.2, "scorer": "random", "ratio": 0.5, "test_acc": rnd},
                 {"seed": seed, "noise": 0.2, "scorer": "good", "ratio": 0.5, "test_acc": good},
                 {"seed": seed, "noise": 0.2, "scorer": "bad", "ratio": 0.5, "test_acc": bad},
                 {"seed": seed, "noise": 0.2, "scorer": "same", "ratio": 0.5, "test_acc": same}]
    text = b.table({"rows": rows, "ratios": [0.5], "noise": [0.2],
                    "scorers": ["random", "good", "bad", "same"]})
    lines = text.splitlines()
    assert lines[0] == "| labels | kept by | 50% |"
    assert lines[2] == "| 20% flipped | all data (stage 1) | 0.810 ± 0.014 |"
    assert lines[3] == "| 20% flipped | random | 0.710 ± 0.014 |"
    assert lines[4] == "| 20% flipped | good | 0.770 ± 0.014 ▲ |"
    assert lines[5] == "| 20% flipped | bad | 0.610 ± 0.014 ▼ |"
    assert lines[6] == "| 20% flipped | same | 0.700 ± 0.014 ≈ |"


@pytest.mark.slow  # two short D-SGD runs and two scorings in one process
def test_one_tiny_row_on_digits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = bench()
    monkeypatch.setattr(b, "CONFIG", ROOT / "configs" / "influence-digits-ring.yaml")
    out = tmp_path / "t.json"
    monkeypatch.setattr(sys, "argv", ["x", "--seeds", "0", "--noise", "0.2", "--ratios", "0.5",
                                      "--scorers", "random,forgetting", "--rounds", "2",
                                      "--json", str(out)])
    b.main()
    report = json.loads(out.read_text())
    assert [(r["scorer"], r["ratio"]) for r in report["rows"]] == [
        ("all", 1.0), ("random", 0.5), ("forgetting", 0.5)]
    assert all(0 < r["test_acc"] <= 1 for r in report["rows"])
