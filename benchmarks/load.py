"""The default run on a busy machine: how much slower ``fedweave run`` gets when other
CPU-bound processes share the cores, with fedweave's thread policy (``after``) and with the
old behaviour reproduced explicitly (``before``: torch's default thread count, OpenMP's default
wait policy), in one invocation.

    python benchmarks/load.py [--rounds 3] [--hogs 2] [--repeats 1]

Each contender is the default experiment (``python -m fedweave run --set rounds=R``, CNN on
digits), a fresh process, timed whole (spawn to exit) and by its summary.json ``wall_s`` (the
round loop). ``before`` adds ``--set engine.threads=<torch's default>`` and imports torch before
fedweave's command line (``python -c "import torch; from fedweave.cli import main; main()"``),
so OpenMP starts with its default wait policy as it did before fedweave set one; ``after``
is the command as a user types it (no ``OMP_NUM_THREADS``, no ``OMP_WAIT_POLICY`` in the
environment: fedweave sets its own). Quiet: nothing else started;
loaded: ``--hogs`` busy loops (``python -c 'while True: pass'``) running throughout. Within a
repeat the contenders alternate, quiet first, then loaded. Printed: each time and the ratio
loaded / quiet per contender (minimum over repeats). Wall times on a machine shared with other
jobs are noisy: compare the ratios of one invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLEAN = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "FEDWEAVE_CORES")


def clean_env() -> dict[str, str]:
    """This environment without any thread setting (what a user's shell usually has)."""
    return {k: v for k, v in os.environ.items() if k not in CLEAN}


def torch_default_threads() -> int:
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         capture_output=True, text=True, env=clean_env(), check=True)
    return int(out.stdout.strip())


OLD_CLI = "import torch; from fedweave.cli import main; main()"  # OpenMP loads first


def command(contender: str, rounds: int, out: Path, torch_threads: int) -> list[str]:
    args = ["run", "--set", f"rounds={rounds}", "--out", str(out)]
    if contender == "before":
        return [sys.executable, "-c", OLD_CLI, *args, "--set", f"engine.threads={torch_threads}"]
    return [sys.executable, "-m", "fedweave", *args]


def time_run(cmd: list[str], out: Path) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env())
    process_s = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"process_s": process_s, "wall_s": float(summary["wall_s"]),
            "threads": summary["environment"]["threads"],
            "test_loss": summary["final"]["test_loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hogs", type=int, default=2, help="busy-loop processes when loaded")
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()
    torch_threads = torch_default_threads()
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    contenders = ("before", "after")
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for load in ("quiet", "loaded"):
                hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                        for _ in range(args.hogs if load == "loaded" else 0)]
                try:
                    for contender in contenders:
                        out = Path(tmp) / f"{rep}-{load}-{contender}"
                        r = time_run(command(contender, args.rounds, out, torch_threads), out)
                        results.setdefault((contender, load), []).append(r)
                        print(f"  {contender:6s} {load:6s} process {r['process_s']:6.1f} s  "
                              f"round loop {r['wall_s']:6.1f} s  threads {r['threads']}",
                              flush=True)
                finally:
                    for h in hogs:
                        h.kill()
                        h.wait()
    print(f"\nfedweave run --set rounds={args.rounds}; {os.cpu_count()} CPUs, torch's default "
          f"{torch_threads} threads; loaded = {args.hogs} busy loops; min of {args.repeats}")
    print(f"{'contender':10s} {'quiet s':>9s} {'loaded s':>9s} {'ratio':>7s}   (whole process; "
          "round loop in brackets)")
    for contender in contenders:
        q = min(r["process_s"] for r in results[(contender, "quiet")])
        ld = min(r["process_s"] for r in results[(contender, "loaded")])
        qw = min(r["wall_s"] for r in results[(contender, "quiet")])
        lw = min(r["wall_s"] for r in results[(contender, "loaded")])
        print(f"{contender:10s} {q:9.1f} {ld:9.1f} {ld / q:7.1f}   ({qw:.1f} → {lw:.1f} s, "
              f"{lw / qw:.1f}×)")
    for contender in contenders:
        cmd = command(contender, args.rounds, Path("<out>"), torch_threads)
        print(f"  {contender}: python " + shlex.join(cmd[1:]))


if __name__ == "__main__":
    main()
