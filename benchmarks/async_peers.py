"""Asynchronous peer-to-peer runs against synchronous ones on the same work, and one process
against one process per peer, interleaved in one run.

    python benchmarks/async_peers.py [--rounds 3] [--repeats 2] [--procs 3 [2 ...]]
        [--baseline-src DIR] [--json benchmarks/results/async-peers.json]

The workload is reference system 001's 3-node ring (``configs/seed001-ring3-pdmm-isvr.yaml``:
PDMM-ISVR, two-way swaps every 3 steps, swap timeout) at a size this CPU runs: real
Fashion-MNIST when installed (else digits), 1500 training samples, an MLP 784-64-10 with the
config's dropout, batch 100, ``engine.name: auto``. Three clocks:

- ``equal``: ``clock.asynchronous`` with equal speeds (every node steps at the same instants);
- ``desync``: train/idle periods with random phases (``clock.train_fraction: 0.3``,
  ``clock.phase: random``; reference system 001's peers train a share of each period and
  start at different times): every node steps alone;
- ``speeds``: log-normal node speeds (``clock.speed_sigma: 0.3``): nodes step alone and the
  fast ones take more steps per round.

Each contender is a fresh process that builds the run, takes one warm-up round, then times
``--rounds`` rounds (``round_s``: median seconds per round) and counts the node steps they
took. The synchronous run of the same config is the reference (``ratio``: async s/round ÷
sync s/round of the same code, and per node step for ``speeds``). With ``--baseline-src`` (a
``src`` folder of another fedweave version, e.g. ``git archive <commit> src | tar -x -C DIR``)
every contender also runs on that code, interleaved, so the table has before/after rows.

``--procs N [M ...]``: the ``equal`` workload as a whole command, ``fedweave run`` against
``fedweave run --procs N`` (and ``--procs M``, ...; one process per peer with N = 3,
point-to-point messages), interleaved: ``whole_s`` spawn to exit, ``rounds_s`` summary.json's
round loop, ``comm_wait_s`` the seconds the ranks spent waiting for each other in the round loop
(the sum of the per-rank logs' column, mean over ranks).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = ROOT / "configs" / "seed001-ring3-pdmm-isvr.yaml"
ECL = ROOT / "configs" / "ecl-isvr-fmnist-pdmm-isvr.yaml"
CLOCKS = {
    "equal": [],
    "desync": ["clock.train_fraction=0.3", "clock.phase=random"],
    "speeds": ["clock.speed_sigma=0.3"],
}

CHILD = r"""
import json, sys, time
from fedweave.plugins import load_builtins
load_builtins()
from fedweave.config import load_config
from fedweave.runner import Runner
cfg = load_config(sys.argv[1], json.loads(sys.argv[2]))
rounds = int(sys.argv[3])
algo = Runner(cfg, None).algo
algo.round(0)
times, steps = [], []
for r in range(1, rounds + 1):
    before = int(algo.steps_done.sum())
    t0 = time.perf_counter()
    algo.round(r)
    times.append(time.perf_counter() - t0)
    steps.append(int(algo.steps_done.sum()) - before)
print(json.dumps({"round_s": times, "node_steps": steps,
                  "engine": algo.ctx.backend, "chunk": algo.ctx.chunk}))
"""


def workloads(fashion: bool) -> dict[str, tuple[Path, list[str]]]:
    """name → (config, overrides): the 3-node ring and the 8-node ECL-ISVR setting."""
    data = ["data.dataset=fashion-mnist"] if fashion else ["data.dataset=digits"]
    out = ["output.plots=false", "output.progress=false"]
    return {
        "ring3": (CONFIG, [*data, "data.train_samples=1500", "model.name=mlp",
                           "model.hidden=[64]", *out]),
        "ecl8": (ECL, [*data, "engine.name=auto", "train.epoch_samples=3000", *out]),
    }


def have_fashion() -> bool:
    from fedweave.data.sources import dataset_status

    return dataset_status("fashion-mnist", None)[0]


def child(src: Path, config: Path, sets: list[str], rounds: int, timeout: float
          ) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(config), json.dumps(sets),
                               str(rounds)], capture_output=True, text=True, env=env,
                              timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:200] if proc.stderr else "?"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def whole(src: Path, config: Path, sets: list[str], procs: int, out: Path, timeout: float
          ) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    run_dir = out / f"procs{procs}-{time.time_ns()}"
    cmd = [sys.executable, "-m", "fedweave", "run", str(config), "--dir", str(run_dir)]
    for s in sets:
        cmd += ["--set", s]
    if procs > 1:
        cmd += ["--procs", str(procs), "--set", "launcher.exchange=point_to_point"]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:g} s"}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1][:200] if proc.stderr else "?"}
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"whole_s": wall, "rounds_s": summary["timing"]["rounds_s"],
            "comm_wait_s": comm_wait(run_dir), "test_acc": summary["final"]["test_acc"]}


def comm_wait(run_dir: Path) -> float:
    """Mean over ranks of the seconds waited for the other ranks (``nodes/rank<r>.log``'s
    ``comm_wait_s`` column, one value per evaluated round and held node); 0 for one process."""
    totals = []
    for log in sorted(run_dir.glob("nodes/rank*.log")):
        rows = [line.split(",") for line in log.read_text().splitlines()]
        head = next((r for r in rows if "comm_wait_s" in r), None)
        if head is None:
            continue
        col = head.index("comm_wait_s")
        seen: dict[str, float] = {}
        for r in rows:
            if len(r) == len(head) and r is not head and r[0].isdigit():
                seen[r[0]] = float(r[col])  # one value per round (the rank's nodes share it)
        totals.append(sum(seen.values()))
    return statistics.mean(totals) if totals else 0.0


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--procs", type=int, nargs="+", default=[3],
                    help="process counts compared with one process (0: skip)")
    ap.add_argument("--baseline-src", type=Path, default=None)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    fashion = have_fashion()
    loads = workloads(fashion)
    base = loads["ring3"][1]
    codes = {"this": ROOT / "src"}
    if args.baseline_src is not None:
        codes = {"baseline": args.baseline_src.resolve(), **codes}
    contenders = {(load, code, clock, mode): (
        path, [*sets_w, *sets, f"clock.asynchronous={mode == 'async'}"])
        for load, (path, sets_w) in loads.items() for code in codes
        for clock, sets in CLOCKS.items()
        for mode in ("sync", "async") if not (mode == "sync" and clock != "equal")}
    results: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        for key, (path, sets) in contenders.items():
            r = child(codes[key[1]], path, sets, args.rounds, args.timeout)
            results.setdefault(key, []).append(r)
            print(f"  [{rep + 1}/{args.repeats}] {' '.join(key):30s} "
                  + (f"{median(r['round_s']):.3f} s/round" if "round_s" in r else r["error"]),
                  file=sys.stderr, flush=True)
    procs: dict[str, list[dict[str, Any]]] = {}
    counts = [n for n in args.procs if n > 1]
    if counts:
        with tempfile.TemporaryDirectory() as tmp:
            sets = [*base, "clock.asynchronous=true", f"rounds={args.rounds + 1}"]
            for rep in range(args.repeats):
                for n in (1, *counts):
                    r = whole(codes["this"], CONFIG, sets, n, Path(tmp), args.timeout)
                    procs.setdefault(f"--procs {n}", []).append(r)
                    print(f"  [{rep + 1}/{args.repeats}] procs {n}: "
                          + (f"{r['whole_s']:.1f} s whole, {r['rounds_s']:.2f} s rounds, "
                             f"{r['comm_wait_s']:.2f} s waiting"
                             if "whole_s" in r else r["error"]), file=sys.stderr, flush=True)
    print(f"\nPDMM-ISVR on {'Fashion-MNIST' if fashion else 'digits'}; ring3: reference system "
          "001's 3-node ring, 1500 samples, MLP 64 with dropout; ecl8: its 8-node graph and "
          f"schedule, logistic regression; {args.rounds} timed rounds × {args.repeats} "
          "repeats\n")
    print("| workload | code | clock | mode | engine (chunk) | s/round | node steps/round | "
          "async ÷ sync | per node step |")
    print("| --- | --- | --- | --- | --- | ---: | ---: | ---: | ---: |")
    rows: list[dict[str, Any]] = []
    for key, runs in results.items():
        ok = [r for r in runs if "round_s" in r]
        load, code, clock, mode = key
        if not ok:
            print(f"| {load} | {code} | {clock} | {mode} | – | {runs[0].get('error')} | | | |")
            continue
        # per repeat: this contender's median round against the same repeat's sync run
        sync = results[(load, code, "equal", "sync")]
        ratios, per_step = [], []
        for r, s in zip(runs, sync, strict=True):
            if "round_s" in r and "round_s" in s:
                ratios.append(median(r["round_s"]) / median(s["round_s"]))
                per_step.append(ratios[-1] * median(s["node_steps"]) / median(r["node_steps"]))
        s_round = median([median(r["round_s"]) for r in ok])
        steps = median([median(r["node_steps"]) for r in ok])
        row = {"workload": load, "code": code, "clock": clock, "mode": mode,
               "engine": ok[0]["engine"], "chunk": ok[0]["chunk"], "s_per_round": s_round,
               "node_steps": steps,
               "ratio": median(ratios), "ratio_per_step": median(per_step)}
        rows.append(row)
        print(f"| {load} | {code} | {clock} | {mode} | {row['engine']} ({row['chunk']}) "
              f"| {s_round:.3f} | {steps:.0f} | {row['ratio']:.2f} | {row['ratio_per_step']:.2f} |")
    if procs:
        print("\n| command | whole s | round loop s | waiting s | test acc |\n"
              "| --- | ---: | ---: | ---: | ---: |")
        for name, runs in procs.items():
            ok = [r for r in runs if "whole_s" in r]
            if not ok:
                print(f"| fedweave run {name} | {runs[0].get('error')} | | | |")
                continue
            print(f"| fedweave run {name} | {median([r['whole_s'] for r in ok]):.1f} | "
                  f"{median([r['rounds_s'] for r in ok]):.2f} | "
                  f"{median([r['comm_wait_s'] for r in ok]):.2f} | {ok[0]['test_acc']:.4f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
            "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "rows": rows, "procs": procs}, indent=1))


if __name__ == "__main__":
    main()
