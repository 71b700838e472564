"""Speed of influence scoring on this CPU (issue 13): TracIn over 5 checkpoints and EL2N for
one node's 6,000 real Fashion-MNIST samples, and the DICE hook's cost per D-SGD step.

    python benchmarks/influence_speed.py [--threads 2] [--json OUT.json]

TracIn/EL2N: one node (``algorithm.name: centralized``) with 6,000 training samples
(``data.train_samples: 6667``, 10% validation), MLP 784-200-200-10, 5 rounds kept as 5
checkpoints; EL2N = 4 short runs of 1 round each (their training is timed separately from the
scoring passes). DICE: D-SGD on a ring of 8 over the same data (750 samples per node, batch 32,
75 validation samples per node, ``influence.validation: node``), one epoch without and with the
one-hop hook; the hook's cost is (with − without) / without, both measured in this process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from fedweave.influence import SCORERS, ScoredRun
from fedweave.influence.dice import DiceHook
from fedweave.influence.el2n import error_norms, short_run
from fedweave.plugins import load_config
from fedweave.runner import Runner, run

FMNIST = ["data.dataset=fashion-mnist", "data.train_samples=6667", "data.val_fraction=0.1",
          "data.partition=iid", "output.progress=false", "output.plots=false",
          "engine.name=loop"]


def scoring(out: Path) -> dict[str, float]:
    cfg = load_config(None, [*FMNIST, "algorithm.name=centralized", "data.nodes=1",
                             "model.name=mlp", "rounds=5", "output.keep=all",
                             f"output.dir={out}", "train.lr=0.1"])
    sr = ScoredRun.open(Path(run(cfg).run_dir))  # type: ignore[arg-type]
    assert len(sr.data.train_idx[0]) == 6000 and len(sr.rounds()) == 5
    t0 = time.perf_counter()
    SCORERS.get("tracin")().score(sr)
    tracin = time.perf_counter() - t0
    t0 = time.perf_counter()
    models = [short_run(sr, k, "el2n", 1) for k in range(4)]
    el2n_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    for params, buffers in models:
        error_norms(sr, params, buffers)
    el2n_score = time.perf_counter() - t0
    return {"samples": 6000, "tracin_5_checkpoints_s": tracin, "el2n_4_short_runs_train_s":
            el2n_train, "el2n_scoring_s": el2n_score}


def dice_overhead() -> dict[str, float]:
    cfg = load_config(None, [*FMNIST, "algorithm.name=dsgd", "topology.name=ring",
                             "data.nodes=8", "model.name=mlp", "model.hidden=[64]", "rounds=1",
                             "train.lr=0.1", "influence.validation=node"])
    times = {}
    for name, hooks in (("plain", []), ("hook", [DiceHook()])):
        runner = Runner(cfg, None, hooks)
        for cb in runner.callbacks:
            cb.on_start(runner)
        t0 = time.perf_counter()
        runner.algo.round(0)
        times[name] = time.perf_counter() - t0
    steps = runner.algo.S
    return {"steps": steps, "plain_step_s": times["plain"] / steps,
            "hook_step_s": (times["hook"] - times["plain"]) / steps,
            "hook_cost_vs_plain_step": (times["hook"] - times["plain"]) / times["plain"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path(__file__).parent / "results" /
                    "influence_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        report = {"threads": args.threads, "scoring": scoring(Path(tmp)),
                  "dice": dice_overhead()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
