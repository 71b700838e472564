"""The pruning table on real Fashion-MNIST (reference system 000): D-SGD on a ring of 8,
stage-2 test accuracy after every node keeps 90/70/50/30% of its samples by each scorer
(``keep: top``, class-balanced: ``data.prune.balance: class``) against random, on clean labels
and with 20% flipped labels, mean ± std over seeds.

    python benchmarks/influence_pruning.py [--threads 1] [--seeds 0,1,2] [--noise 0,0.2]
        [--ratios 0.9,0.7,0.5,0.3] [--scorers random,tracin,...] [--train-samples N]
        [--rounds R] [--json PATH]

Scale (``configs/influence-fashion-mnist-ring8.yaml`` with ``data.train_samples`` and
``rounds`` overridable): every (noise, seed) trains one stage 1 on all data, every scorer
scores it once (``fedweave influence``), and each ratio retrains stage 2 on the kept samples
with everything else identical (what ``fedweave prune --stage1 RUN_DIR`` does, without
rescoring per ratio). Rows are written to the JSON file as they finish, so a partial table
survives an interrupted run; ``--table`` prints the table of an existing JSON file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from fedweave.plugins import load_config
from fedweave.runner import run
from fedweave.workflows.prune import score_run, stage2_config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "influence-fashion-mnist-ring8.yaml"
SCORERS = ["random", "tracin", "if_ekfac", "dice", "el2n", "forgetting"]


def stage1(tmp: Path, seed: int, noise: float, extra: list[str]) -> tuple[Any, Path, float]:
    cfg = load_config(CONFIG, [*extra, f"seed={seed}", f"data.label_noise={noise}",
                               "output.keep=all", f"output.dir={tmp}", "output.plots=false",
                               "output.progress=false"])
    res = run(cfg)
    return cfg, Path(res.run_dir), float(res.summary["final"]["test_acc"])  # type: ignore[arg-type]


def stage2(cfg: Any, scores: Path, ratio: float) -> float:
    s2 = stage2_config(cfg, scores, ratio, "top", "class")
    s2.output = s2.output.model_copy(update={"keep": "last", "checkpoint_every": 0})
    return float(run(s2).summary["final"]["test_acc"])


def fmt(values: list[float]) -> str:
    if not values:
        return "—"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {sd:.3f}"


def versus(acc: list[float], base: list[float]) -> str:
    """▲ / ▼ when the mean is above / below random's by more than the larger of the two
    standard deviations, ≈ otherwise."""
    if len(acc) < 2 or len(base) < 2:
        return ""
    gap = statistics.mean(acc) - statistics.mean(base)
    margin = max(statistics.stdev(acc), statistics.stdev(base))
    return " ▲" if gap > margin else " ▼" if gap < -margin else " ≈"


def table(report: dict[str, Any]) -> str:
    """Markdown: one row per (noise, scorer), one column per ratio, mean ± std over seeds,
    each scorer's cell marked against random (``versus``)."""
    rows = report["rows"]
    ratios = report["ratios"]
    lines = ["| labels | kept by | " + " | ".join(f"{r:.0%}" for r in ratios) + " |",
             "| --- | --- | " + " | ".join("---" for _ in ratios) + " |"]
    for noise in report["noise"]:
        label = "clean" if noise == 0 else f"{noise:.0%} flipped"
        full = [r["test_acc"] for r in rows if r["noise"] == noise and r["scorer"] == "all"]
        lines.append(f"| {label} | all data (stage 1) | " + " | ".join(
            fmt(full) for _ in ratios) + " |")
        for scorer in report["scorers"]:
            cells = []
            for ratio in ratios:
                acc = [r["test_acc"] for r in rows if r["noise"] == noise
                       and r["scorer"] == scorer and r["ratio"] == ratio]
                base = [r["test_acc"] for r in rows if r["noise"] == noise
                        and r["scorer"] == "random" and r["ratio"] == ratio]
                cells.append(fmt(acc) + ("" if scorer == "random" else versus(acc, base)))
            lines.append(f"| {label} | {scorer} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scorers", default=",".join(SCORERS))
    ap.add_argument("--ratios", default="0.9,0.7,0.5,0.3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--noise", default="0,0.2")
    ap.add_argument("--train-samples", type=int, default=None,
                    help="data.train_samples (all nodes together, validation included)")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--test-samples", type=int, default=None)
    ap.add_argument("--el2n-runs", type=int, default=2)
    ap.add_argument("--table", action="store_true", help="print the table of --json and stop")
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" /
                    "influence_pruning.json")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(args.json.read_text())))
        return
    torch.set_num_threads(args.threads)
    extra = [f"influence.el2n.runs={args.el2n_runs}"]
    if args.train_samples:
        extra.append(f"data.train_samples={args.train_samples}")
    if args.rounds:
        extra.append(f"rounds={args.rounds}")
    if args.test_samples:
        extra.append(f"data.test_samples={args.test_samples}")
    scorers = args.scorers.split(",")
    report: dict[str, Any] = {
        "config": CONFIG.name, "overrides": extra, "threads": args.threads,
        "ratios": [float(r) for r in args.ratios.split(",")],
        "seeds": [int(s) for s in args.seeds.split(",")],
        "noise": [float(n) for n in args.noise.split(",")], "scorers": scorers, "rows": []}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for seed in report["seeds"]:  # seeds outermost: a partial run has every cell's first seed
        for noise in report["noise"]:
            with tempfile.TemporaryDirectory() as tmp:
                cfg, run_dir, acc = stage1(Path(tmp), seed, noise, extra)
                report["rows"].append({"seed": seed, "noise": noise, "scorer": "all",
                                       "ratio": 1.0, "test_acc": acc})
                print(f"seed {seed} noise {noise}: stage 1 {acc:.4f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
                for name in scorers:
                    ts = time.perf_counter()
                    scores, _ = score_run(run_dir, name)
                    score_s = time.perf_counter() - ts
                    for ratio in report["ratios"]:
                        acc = stage2(cfg, scores, ratio)
                        report["rows"].append({"seed": seed, "noise": noise, "scorer": name,
                                               "ratio": ratio, "test_acc": acc,
                                               "score_s": score_s})
                        print(f"seed {seed} noise {noise}: {name} keep {ratio:.0%} {acc:.4f} "
                              f"({time.perf_counter() - t0:.0f} s)", flush=True)
                    report["wall_s"] = time.perf_counter() - t0
                    args.json.write_text(json.dumps(report, indent=2))
    print(table(report))


if __name__ == "__main__":
    main()
