"""Records and memory at population scale: FedAvg on FedProx Synthetic(α, β) (default sizes,
partition natural, one device per client), 1,000 clients per round, evaluation every round,
logistic regression, at 10,000 and 100,000 clients.

    python benchmarks/scale.py [--nodes 10000 100000] [--rounds 20] [--cohort 1000]
                               [--src PATH] [--json out.json] [--set KEY=VALUE]...

Each population runs ``python -m fedweave run`` in its own wrapper process, so the peak RSS
printed (``ru_maxrss`` of the child) is that run's own. Printed per population: the run
directory's size on disk, the peak RSS, the median seconds per round (from metrics.csv's
wall_time, rounds 2..R: the round, its evaluation and its records), the set-up seconds and the
CPU seconds of the whole process (user + system: less sensitive to a busy machine).
The last line is the per-round ratio of the largest to the smallest population: ≈ 1 means no
per-round cost grows with the population. ``--src`` runs another checkout's ``src`` (before /
after comparisons).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

MEASURE = ("import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
           "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
           "print('MAXRSS', u.ru_maxrss, 'CPU', u.ru_utime + u.ru_stime); sys.exit(code)")

WORKLOAD = ["data.dataset=synthetic", "data.partition=natural", "model.name=logistic",
            "train.batch_size=10", "train.lr=0.01", "output.eval_every=1", "output.plots=false",
            "output.progress=false", "data.test_samples=2000", "engine.threads=1"]


def size_on_disk(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def one(nodes: int, rounds: int, cohort: int, src: Path, extra: list[str], out: Path
        ) -> dict[str, Any]:
    sets = [*WORKLOAD, f"data.nodes={nodes}", f"algorithm.clients_per_round={cohort}",
            f"rounds={rounds}", *extra]
    cmd = [sys.executable, "-c", MEASURE, sys.executable, "-m", "fedweave", "run",
           *[a for s in sets for a in ("--set", s)], "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        return {"nodes": nodes, "error": proc.stderr.strip().splitlines()[-1:]}
    measured = proc.stdout.split("MAXRSS")[-1].split()
    rss_kib, cpu_s = int(measured[0]), float(measured[2])
    (run_dir,) = [p for p in out.iterdir() if (p / "config.yaml").is_file()]
    with open(run_dir / "metrics.csv", newline="") as f:
        ends = sorted({int(r["round"]): float(r["wall_time"]) for r in csv.DictReader(f)
                       if r["split"] == "round" and r["metric"] == "lr"}.items())
    per_round = [b - a for (_, a), (_, b) in itertools.pairwise(ends)]
    summary = json.loads((run_dir / "summary.json").read_text())
    files = sum(1 for p in run_dir.rglob("*") if p.is_file())
    return {"nodes": nodes, "cohort": cohort, "rounds": rounds,
            "records_mb": size_on_disk(run_dir) / 1e6, "files": files,
            "peak_rss_mb": rss_kib / 1024, "round_s": statistics.median(per_round),
            "setup_s": summary.get("timing", {}).get("setup_s"), "cpu_s": cpu_s,
            "test_acc": summary["final"]["test_acc"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--cohort", type=int, default=1000)
    ap.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1] / "src")
    ap.add_argument("--set", dest="extra", action="append", default=[],
                    help="another config override for every run")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rows = []
    print(f"{'clients':>8} {'records MB':>10} {'files':>6} {'peak RSS MB':>11} "
          f"{'s/round':>8} {'setup s':>8} {'CPU s':>7} {'test acc':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.nodes:
            row = one(n, args.rounds, args.cohort, args.src, args.extra, Path(tmp) / f"n{n}")
            rows.append(row)
            if "error" in row:
                print(f"{n:>8} failed: {row['error']}")
                continue
            print(f"{n:>8} {row['records_mb']:>10.2f} {row['files']:>6} "
                  f"{row['peak_rss_mb']:>11.0f} {row['round_s']:>8.3f} {row['setup_s']:>8.1f} "
                  f"{row['cpu_s']:>7.1f} {row['test_acc']:>8.3f}", flush=True)
    done = [r for r in rows if "error" not in r]
    if len(done) >= 2:
        print(f"per-round ratio {done[-1]['nodes']} / {done[0]['nodes']} clients: "
              f"{done[-1]['round_s'] / done[0]['round_s']:.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
