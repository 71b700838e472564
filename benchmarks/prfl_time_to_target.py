"""PR-FL's time-to-target table on the real Fashion-MNIST (reference system 002).

Runs the shipped configs ``configs/prfl-fmnist-<method>.yaml`` (10 IID clients with PR-FL's
bandwidth profile, LEAF Conv2, SGD lr 0.25, jobs of 5 steps of batch 20) for PR-FL, HeteroFL,
FedFix, FedAsync, FedBuff and FedAvg, each until its server model's test accuracy reaches
``--target`` (or ``--max-sim-s`` simulated seconds pass), and prints the simulated seconds and
server updates to the target, as PR-FL's paper tabulates them (its FEMNIST IID row, 80%:
PR-FL 10.7k, HeteroFL 14.3k, FedFix 19.4k, FedAsync 26.2k, FedAvg 76.1k). It then says whether
PR-FL needs at most 0.5× FedAsync's time; if not, it prints why: each client's simulated
seconds per activity (download, compute, upload, waiting for an aggregation) and jobs, and
PR-FL's client densities over time (``nodes/densities.csv``). Nothing here is tuned to pass.

    python benchmarks/prfl_time_to_target.py [--target 0.8] [--max-sim-s 6000]
        [--methods prfl,fedasync,...] [--out benchmarks/results/prfl-fmnist] [--reuse]

Every run uses one thread and the loop engine (the measured faster one here), writes its run
directory under ``--out`` (plots: accuracy against simulated time and bytes; ``fedweave report
<out>/*`` overlays them) and the table goes to ``<out>/table.json``. ``--reuse`` takes the
finished run directories already under ``--out`` (runs are deterministic).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
from typing import Any

from fedweave.callbacks import Callback
from fedweave.plugins import load_config
from fedweave.runner import Runner, run

ROOT = Path(__file__).resolve().parents[1]
METHODS = ["prfl", "heterofl", "fedfix", "fedasync", "fedbuff", "fedavg"]


class StopAtTarget(Callback):
    """Ends the run at the first evaluation reaching the target, or past a simulated-time cap."""

    def __init__(self, target: float, max_sim_s: float) -> None:
        self.target, self.max_sim_s = target, max_sim_s

    def should_stop(self, runner: Runner) -> bool:
        last = runner.history[-1] if runner.history else {}
        return (last.get("test_acc", 0.0) >= self.target
                or runner.totals["sim_time_s"] >= self.max_sim_s)


def run_method(method: str, target: float, max_sim_s: float, out: Path) -> Path:
    """Run one method's config until the target (or the cap); its run directory."""
    cfg = load_config(ROOT / "configs" / f"prfl-fmnist-{method}.yaml", [
        "rounds=1000000", f"output.target_acc={target}", "output.checkpoint_every=0",
        "output.progress=false", f"output.dir={out}", "engine.threads=1",
        "engine.name=loop"])
    res = run(cfg, callbacks=[StopAtTarget(target, max_sim_s)])
    assert res.run_dir is not None
    return res.run_dir


def finished_run(method: str, target: float, out: Path) -> Path | None:
    """A finished run directory of ``method`` for this target under ``out`` (runs are
    deterministic: the same config gives the same numbers), else None."""
    for summary in sorted(out.glob(f"prfl-fmnist-{method}-*/summary.json")):
        s = json.loads(summary.read_text())
        if s.get("target_acc") == target and s.get("algorithm") == method:
            return summary.parent
    return None


def row_of(method: str, run_dir: Path) -> dict[str, Any]:
    s = json.loads((run_dir / "summary.json").read_text())
    acc = [float(r["value"]) for r in csv.DictReader((run_dir / "metrics.csv").open())
           if r["split"] == "test" and r["metric"] == "acc" and r["node"] == "global"]
    return {"method": method, "run_dir": str(run_dir), "time_to_target": s["time_to_target"],
            "best_test_acc": max(acc), "updates": s["rounds_done"],
            "sim_time_s": s["sim_time_s"], "bytes_up": s["bytes_up"],
            "bytes_down": s["bytes_down"], "wall_s": s["wall_s"],
            "client_time": s.get("client_time"), "final_densities": s.get("final_densities")}


def densities_over_time(run_dir: str) -> list[dict[str, str]]:
    path = Path(run_dir) / "nodes" / "densities.csv"
    return list(csv.DictReader(path.open())) if path.is_file() else []


def print_breakdown(rows: dict[str, dict[str, Any]]) -> None:
    for method in ("prfl", "fedasync"):
        times = rows.get(method, {}).get("client_time")
        if not times:
            continue
        print(f"\n{method}: simulated seconds per client (download / compute / upload / wait), "
              "jobs")
        print("| client | jobs | download s | compute s | upload s | wait s |")
        print("|---|---|---|---|---|---|")
        for name, t in times.items():
            print(f"| {name} | {t['jobs']} | {t['download_s']:.0f} | {t['compute_s']:.1f} | "
                  f"{t['upload_s']:.0f} | {t['wait_s']:.0f} |")
    dens = densities_over_time(rows["prfl"]["run_dir"]) if "prfl" in rows else []
    if dens:
        print("\nPR-FL client densities over time (nodes/densities.csv, every 10th row)")
        cols = [c for c in dens[0] if c.startswith("client")]
        print("| update | sim s | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 2) + "|")
        for row in dens[::10] + ([dens[-1]] if len(dens) % 10 != 1 else []):
            print(f"| {row['epoch']} | {float(row['sim_time']):.0f} | "
                  + " | ".join(f"{float(row[c]):.2f}" for c in cols) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--max-sim-s", type=float, default=6000.0)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "prfl-fmnist")
    ap.add_argument("--reuse", action="store_true", help="take a method's finished run "
                    "directory under --out instead of running it again")
    args = ap.parse_args()
    rows: dict[str, dict[str, Any]] = {}
    for method in args.methods.split(","):
        run_dir = finished_run(method, args.target, args.out) if args.reuse else None
        if run_dir is None:
            run_dir = run_method(method, args.target, args.max_sim_s, args.out)
        rows[method] = r = row_of(method, run_dir)
        print(f"{method}: {r['time_to_target']} best {r['best_test_acc']:.4f} "
              f"wall {r['wall_s']:.0f}s", flush=True)
    base = rows.get("prfl", {}).get("time_to_target")
    print(f"\nsimulated seconds to {args.target:.0%} test accuracy (Fashion-MNIST, PR-FL profile)")
    print("| method | sim s to target | server updates | vs PR-FL | best test acc | "
          "MB up | MB down | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for method, r in rows.items():
        hit = r["time_to_target"]
        sim = f"{hit['sim_s']:.0f}" if hit else f"not reached in {r['sim_time_s']:.0f}"
        upd = str(hit["update"]) if hit else "-"
        ratio = f"{hit['sim_s'] / base['sim_s']:.2f}×" if hit and base else "-"
        print(f"| {method} | {sim} | {upd} | {ratio} | {r['best_test_acc']:.4f} | "
              f"{r['bytes_up'] / 1e6:.0f} | {r['bytes_down'] / 1e6:.0f} | {r['wall_s']:.0f} |")
    fa = rows.get("fedasync", {}).get("time_to_target")
    verdict: dict[str, Any] = {}
    if base and fa:
        ratio = base["sim_s"] / fa["sim_s"]
        verdict = {"prfl_over_fedasync": ratio, "within_half": ratio <= 0.5}
        print(f"\nPR-FL / FedAsync time to target: {ratio:.2f} "
              f"({'≤' if ratio <= 0.5 else '>'} 0.5)")
    if not verdict.get("within_half", True) or not (base and fa):
        print_breakdown(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.json").write_text(json.dumps(
        {"target": args.target, "max_sim_s": args.max_sim_s, "rows": rows, **verdict,
         "densities": densities_over_time(rows["prfl"]["run_dir"]) if "prfl" in rows else []},
        indent=2))


if __name__ == "__main__":
    main()
