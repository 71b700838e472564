"""Cross-device FedAvg, whole processes side by side: fedweave's CLI against the plain PyTorch
loop, Flower's simulation and the hand-written batched limit, interleaved, measured in one run.

    python benchmarks/cross_device.py [--config benchmarks/configs/cross-device-mlp.yaml]
        [--repeats 3] [--threads 2] [--flower-python .venv-flower/bin/python] [--rounds N]

Every contender is a fresh process started from this script; repeats are interleaved (A B C D,
A B C D, ...) so load changes hit every contender alike. ``whole_s`` is spawn to exit;
``round_loop_s`` is what the contender reports for its round loop (fedweave: summary.json's
``wall_s``); ``peak_mb`` is the peak of the summed resident memory of the contender's process
tree (sampled every 0.1 s from /proc; Flower runs many processes). Prints a table of medians
with min–max and the ratios the speed targets are stated in; ``--json`` keeps everything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _tree_rss(root: int) -> int:
    """Summed VmRSS (bytes) of ``root`` and its descendants."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/status") as f:
                kb = next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = kb * 1024
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def measure(cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    whole = time.perf_counter() - t0
    done.set()
    sampler.join()
    result: dict[str, Any] = {"whole_s": whole, "peak_mb": peak[0] / 2**20,
                              "returncode": proc.returncode}
    for line in out.splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    if "--out" in cmd:  # fedweave: read the run directory it wrote
        runs = sorted(Path(cmd[cmd.index("--out") + 1]).glob("*/summary.json"),
                      key=lambda p: p.stat().st_mtime)
        if runs:
            summary = json.loads(runs[-1].read_text())
            result.update(round_loop_s=summary["wall_s"],
                          test_acc=summary["final"]["test_acc"], engine=summary["backend"],
                          timing=summary.get("timing"))
    if proc.returncode:
        result["error"] = (err or out).strip().splitlines()[-3:]
    return result


def contenders(args: argparse.Namespace, out_dir: Path) -> dict[str, list[str]]:
    py = sys.executable
    cfg = str(args.config)
    rounds = ["--rounds", str(args.rounds)] if args.rounds else []
    threads = ["--threads", str(args.threads)] if args.threads else []
    sets = [*(["--set", f"rounds={args.rounds}"] if args.rounds else []),
            *(["--set", f"engine.threads={args.threads}"] if args.threads else [])]
    out = {f"fedweave ({b})": [py, "-m", "fedweave", "run", cfg, *sets, "--set",
                               f"engine.backend={b}", "--out", str(out_dir / b)]
           for b in args.backends}
    out["plain PyTorch loop"] = [py, str(HERE / "plain_fedavg.py"), cfg, *rounds, *threads]
    out["batched limit (limit.py)"] = [py, str(HERE / "limit.py"), cfg, *rounds, *threads]
    flower = args.flower_python or (ROOT / ".venv-flower" / "bin" / "python")
    if Path(flower).is_file():
        out["Flower run_simulation"] = [str(flower), str(HERE / "flower_fedavg.py"), cfg,
                                        *rounds]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "configs" / "cross-device-mlp.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--backends", nargs="+", default=["auto", "vectorized", "loop"])
    parser.add_argument("--flower-python", default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1"}
    results: dict[str, list[dict[str, Any]]] = {}
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        runs = contenders(args, Path(tmp))
        for rep in range(args.repeats):
            for name, cmd in runs.items():
                r = measure(cmd, env, ROOT)
                results.setdefault(name, []).append(r)
                print(f"  [{rep + 1}/{args.repeats}] {name:28s} whole {r['whole_s']:6.2f} s  "
                      f"loop {r.get('round_loop_s', float('nan')):6.2f} s  "
                      f"acc {r.get('test_acc', float('nan')):.3f}"
                      + (f"  ERROR {r['error']}" if "error" in r else ""),
                      file=sys.stderr, flush=True)
    load.append(os.getloadavg()[0])
    print(table(results))
    print(ratios(results))
    if args.json:
        args.json.write_text(json.dumps({"config": str(args.config), "threads": args.threads,
                                         "repeats": args.repeats, "load_avg": load,
                                         "results": results}, indent=1))


def _stat(rows: list[dict[str, Any]], key: str) -> tuple[float, float, float]:
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(vals), min(vals), max(vals)


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    head = ("| contender | whole process s | round loop s | peak MB | test acc |\n"
            "|---|---|---|---|---|")
    lines = [head]
    for name, rows in results.items():
        w, lp, pk, acc = (_stat(rows, k) for k in ("whole_s", "round_loop_s", "peak_mb",
                                                    "test_acc"))
        lines.append(f"| {name} | {w[0]:.2f} ({w[1]:.2f}–{w[2]:.2f}) | {lp[0]:.2f} "
                     f"({lp[1]:.2f}–{lp[2]:.2f}) | {pk[0]:.0f} | {acc[0]:.3f} |")
    return "\n".join(lines)


def ratios(results: dict[str, list[dict[str, Any]]]) -> str:
    med = {n: {k: _stat(r, k)[0] for k in ("whole_s", "round_loop_s")}
           for n, r in results.items()}
    fw = med.get("fedweave (auto)")
    if fw is None:
        return ""
    out = [f"\nfedweave (auto) overhead (whole − round loop): "
           f"{fw['whole_s'] - fw['round_loop_s']:.2f} s (target ≤ 1.5 s)"]
    if "plain PyTorch loop" in med:
        out.append(f"whole process, plain loop / fedweave: "
                   f"{med['plain PyTorch loop']['whole_s'] / fw['whole_s']:.2f}× (target ≥ 1.5×)")
    if "Flower run_simulation" in med:
        out.append(f"whole process, Flower / fedweave: "
                   f"{med['Flower run_simulation']['whole_s'] / fw['whole_s']:.1f}× "
                   "(target ≥ 10×)")
    if "batched limit (limit.py)" in med:
        out.append(f"round loop, fedweave / limit: "
                   f"{fw['round_loop_s'] / med['batched limit (limit.py)']['round_loop_s']:.2f}× "
                   "(target ≤ 1.2×)")
    return "\n".join(out)


if __name__ == "__main__":
    main()
