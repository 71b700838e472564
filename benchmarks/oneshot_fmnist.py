"""One-shot FL by data-free distillation on the real Fashion-MNIST (reference system 003, CPU).

Runs ``fedweave distill`` on a config (default ``configs/oneshot-fmnist.yaml``: 5 IID
teachers) and prints the table of the README section: each teacher, the teachers' ensemble,
the student trained on synthetic images only, the two baselines (the same student recipe on
the clients' real data, and on random-noise images labelled by the ensemble), with the wall
time of every stage. Writes the numbers as JSON too.

    python benchmarks/oneshot_fmnist.py [--config configs/oneshot-fmnist.yaml]
        [--set key=value ...] [--out runs] [--json benchmarks/results/oneshot-fmnist.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from fedweave.plugins import load_config
from fedweave.workflows.distill import distill

ROOT = Path(__file__).resolve().parents[1]


def table(summary: dict[str, Any]) -> str:
    """The README's markdown table of a distill summary."""
    wall = summary["wall_s"]
    teachers = summary["teachers"]["test_acc"]
    rows = [("teachers (each)", ", ".join(f"{a:.3f}" for a in teachers), wall["teachers"]),
            ("teachers' ensemble", f"{summary['ensemble']['test_acc']:.3f}", None),
            ("synthesis (initial batches)", "", wall["synthesize"]),
            ("**student, synthetic images only**", f"**{summary['student']['test_acc']:.3f}**",
             wall["student"])]
    for name, b in summary["baselines"].items():
        label = {"real": "baseline: student on the clients' real data",
                 "noise": "baseline: student on noise labelled by the teachers"}[name]
        rows.append((label, f"{b['test_acc']:.3f}", wall[f"baseline-{name}"]))
    out = ["| | test accuracy | stage wall time (s) |", "|---|---|---|"]
    for label, acc, seconds in rows:
        out.append(f"| {label} | {acc} | {'' if seconds is None else f'{seconds:.0f}'} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "configs" / "oneshot-fmnist.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default="runs")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" /
                                          "oneshot-fmnist.json"))
    args = ap.parse_args()
    cfg = load_config(args.config, [*args.overrides, f"output.dir={args.out}"])
    t0 = time.perf_counter()
    result = distill(cfg, log=print)
    total = time.perf_counter() - t0
    print(table(result.summary))
    print(f"total {total:.0f} s on {torch.get_num_threads()} threads → {result.run_dir}")
    sets = [part for o in args.overrides for part in ("--set", o)]
    report = {"command": " ".join(["python benchmarks/oneshot_fmnist.py", "--config",
                                   args.config, *sets]),
              "config": args.config, "overrides": args.overrides, "total_s": total,
              "threads": torch.get_num_threads(), "machine": platform.processor() or
              platform.machine(), "summary": result.summary}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
