"""ECL-ISVR table: run the shipped ``configs/ecl-isvr-fmnist-<row>.yaml`` and print their final
mean node test accuracy beside the published one (Niwa et al., ICML 2021, logistic regression
on Fashion-MNIST, 8 nodes on reference system 001's random graph, 350 epochs).

    python benchmarks/ecl_isvr_table.py                         # the configs as shipped
    python benchmarks/ecl_isvr_table.py --set clock.asynchronous=true \\
        --set clock.train_fraction=0.3 --set clock.phase=random   # desynchronised idle phases
    python benchmarks/ecl_isvr_table.py --rounds 100 --rows dsgd,pdmm-isvr --json part.json
    python benchmarks/ecl_isvr_table.py --from part.json,other.json   # print stored results

``--set`` overrides apply to the decentralized rows only (the centralized reference has no
peers); ``--rounds`` to every row. ``--json`` stores each row's evaluated history, ``--from``
prints a table from stored files without running.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fedweave.runner import run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = ["dsgd", "admm-isvr", "pdmm-isvr", "centralized"]
#: final values read from the paper's figures (nttcslab/ecl-isvr resource/*.svg), random graph
PUBLISHED = {"dsgd": (0.6544, 1.387), "admm-isvr": (0.8045, 0.613),
             "pdmm-isvr": (0.8046, 0.612), "centralized": (0.8166, 0.568)}
#: published mean test accuracy at epochs 10 / 50 / 100 / 200 (the figures' x = 16 × epoch)
TRAJECTORY_EPOCHS = (10, 50, 100, 200)
PUBLISHED_TRAJECTORY = {"dsgd": (0.146, 0.421, 0.570, 0.640),
                        "pdmm-isvr": (0.658, 0.724, 0.761, 0.787),
                        "centralized": (0.682, 0.771, 0.795, 0.810)}


def run_row(row: str, overrides: list[str], rounds: int | None) -> dict[str, Any]:
    """One shipped config with ``overrides``: its evaluated history and wall seconds."""
    over = ["output.progress=false", "output.plots=false", "output.checkpoint_every=0"]
    if rounds is not None:
        over.append(f"rounds={rounds}")
    if row != "centralized":
        over += overrides
    t0 = time.perf_counter()

    def progress(r: int, total: int, summary: dict[str, float]) -> None:
        print(f"{row}: epoch {r}/{total} test acc {summary.get('test_acc', float('nan')):.4f} "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    result = run(CONFIGS / f"ecl-isvr-fmnist-{row}.yaml", overrides=over, write=False,
                 progress=progress)
    keep = ("round", "test_acc", "test_acc_min", "test_acc_max", "test_loss")
    history = [{k: h[k] for k in keep if k in h} for h in result.history]
    return {"row": row, "overrides": over, "seconds": time.perf_counter() - t0,
            "history": history}


def _at(history: list[dict[str, Any]], epoch: int) -> float | None:
    return next((h["test_acc"] for h in history if h["round"] == epoch), None)


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: ours (final mean node test accuracy, min/max node, test CE) beside the
    published values, then the trajectories."""
    lines = ["| row | epochs | test acc (mean of nodes) | min node | max node | test CE | "
             "published acc | published CE | seconds |", "|---|---|---|---|---|---|---|---|---|"]
    for row in [r for r in ROWS if r in results] + [r for r in results if r not in ROWS]:
        res = results[row]
        last = res["history"][-1]
        pub_acc, pub_ce = PUBLISHED.get(row, (None, None))
        lines.append(
            f"| {row} | {last['round']} | {last['test_acc']:.4f} | "
            f"{last.get('test_acc_min', last['test_acc']):.4f} | "
            f"{last.get('test_acc_max', last['test_acc']):.4f} | {last['test_loss']:.3f} | "
            f"{pub_acc if pub_acc is not None else '–'} | "
            f"{pub_ce if pub_ce is not None else '–'} | {res['seconds']:.0f} |")
    lines += ["", "| row | " + " | ".join(f"epoch {e}" for e in TRAJECTORY_EPOCHS) + " |",
              "|---|" + "---|" * len(TRAJECTORY_EPOCHS)]
    for row, res in results.items():
        ours = [_at(res["history"], e) for e in TRAJECTORY_EPOCHS]
        pub = PUBLISHED_TRAJECTORY.get(row)
        cells = [("–" if o is None else f"{o:.3f}") + (f" ({p:.3f})" if pub else "")
                 for o, p in zip(ours, pub or [None] * len(ours), strict=True)]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS),
                        help="config stems: dsgd, admm-isvr, pdmm-isvr, centralized, ...")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        help="KEY=VALUE for the decentralized rows (repeatable)")
    parser.add_argument("--rounds", type=int, default=None, help="epochs (default: config)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="store the results here")
    parser.add_argument("--from", dest="stored", default=None,
                        help="comma list of --json files to print instead of running")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, Any]] = {}
    if args.stored:
        for path in args.stored.split(","):
            results.update(json.loads(Path(path).read_text()))
    else:
        for row in args.rows.split(","):
            results[row] = run_row(row, args.overrides, args.rounds)
            if args.json is not None:
                args.json.write_text(json.dumps(results, indent=1))
    overrides = sorted({o for r in results.values() for o in r["overrides"]
                        if not o.startswith("output.")})
    print(f"configs/ecl-isvr-fmnist-<row>.yaml, overrides: {', '.join(overrides) or 'none'}; "
          "published values in brackets\n")
    print(table(results))


if __name__ == "__main__":
    main()
