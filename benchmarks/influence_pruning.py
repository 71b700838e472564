"""The 50%-pruning table on real Fashion-MNIST (issue 13): D-SGD on a ring of 8, stage 2 test
accuracy after keeping each node's most helpful half by each scorer, against random.

    python benchmarks/influence_pruning.py [--threads 2] [--scorers tracin,if_ekfac,...]

CPU-sized (``configs/influence-fashion-mnist-ring8.yaml``): 750 training samples per node,
MLP 784-64-10, 10 epochs. Stage 1 runs once and every scorer's pipeline reuses it
(``fedweave prune --stage1 RUN_DIR``, what this script does in-process), so the rows differ
only by the samples kept. Writes benchmarks/results/influence_pruning.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from fedweave.plugins import load_config
from fedweave.runner import run
from fedweave.workflows.prune import PrunePipeline

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "influence-fashion-mnist-ring8.yaml"
SCORERS = ["random", "tracin", "if_ekfac", "dice", "el2n", "forgetting"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scorers", default=",".join(SCORERS))
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" /
                    "influence_pruning.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(CONFIG, ["output.keep=all", f"output.dir={tmp}", "output.plots=false",
                                   "output.progress=false"])
        stage1 = Path(run(cfg).run_dir)  # type: ignore[arg-type]
        s1 = json.loads((stage1 / "summary.json").read_text())["final"]
        rows["all data (stage 1)"] = {"test_acc": s1["test_acc"], "kept": 1.0}
        for name in args.scorers.split(","):
            pipe_ = PrunePipeline(cfg, name, args.ratio, "top", stage1)
            pipe = pipe_.create()
            summary = pipe_.finish(pipe, pipe.run())
            s2 = summary["stage2"]["final"]
            rows[name] = {"test_acc": s2["test_acc"], "test_acc_min": s2["test_acc_min"],
                          "kept": summary["samples_kept"]["total"]
                          / summary["samples_kept"]["total_of"],
                          "score_s": summary["wall_s"]["score"]}
            print(f"{name:12s} stage-2 test acc {s2['test_acc']:.4f}", flush=True)
    report = {"config": str(CONFIG.name), "ratio": args.ratio, "threads": args.threads,
              "rows": rows}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"{'scorer':22s} {'stage-2 test acc':>16s} {'kept':>6s}")
    for name, r in rows.items():
        print(f"{name:22s} {r['test_acc']:16.4f} {r['kept']:6.2f}")


if __name__ == "__main__":
    main()
