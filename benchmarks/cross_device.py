"""Cross-device FedAvg, whole processes side by side: ``fedweave run`` at its defaults and with
tuned settings against the plain PyTorch loop, Flower's simulation and the hand-written batched
limit, interleaved, measured in one run.

    python benchmarks/cross_device.py [--repeats 3] [--rounds N] [--device cpu|cuda]
        [--flower-python PY] [--json benchmarks/results/cross-device.json]

Contenders (every one a fresh process started from this script):

- ``fedweave run (defaults)``: ``python -m fedweave run CONFIG`` with
  ``benchmarks/configs/cross-device-mlp-defaults.yaml``, the workload and nothing else
  (evaluation of the test set and of every client's validation split every round, a
  checkpoint every round, 10% validation hold-out, plots, fedweave's engine and thread
  choice);
- ``fedweave tuned``: ``benchmarks/configs/cross-device-mlp.yaml`` (``eval_every: 30``,
  ``checkpoint_every: 0``, ``val_fraction: 0``) with ``--set engine.threads=<--threads>`` and
  ``engine.name`` from ``--backends`` (default ``auto``);
- ``plain PyTorch loop`` (``plain_fedavg.py``): the obvious loop, torch's default threads,
  the test set evaluated every round;
- ``batched limit`` (``limit.py``): the same SGD steps as one hand-written batched computation
  per step (training only; ``--threads``);
- ``batched limit + evaluation`` (``limit.py --evaluate`` on the defaults config): the same,
  plus the evaluation ``fedweave run`` does at its defaults every round (the test set and the
  cohort's validation samples), written by hand: the limit of the default round loop;
- ``Flower run_simulation`` (``flower_fedavg.py``): in its own venv, found by
  ``--flower-python`` or ``$FEDWEAVE_FLOWER_PYTHON`` (else ``/work/venvs/flower/bin/python`` if it
  exists); "not installed" otherwise.

Repeats are interleaved (A B C D E, A B C D E, ...) so load changes hit every contender alike;
every process is bounded by ``--timeout``. ``whole_s`` is spawn to exit; ``round_loop_s`` is
what the contender reports for its round loop (fedweave: summary.json ``timing.rounds_s``,
training + evaluation + records + checkpoints; plain loop: training + evaluation; Flower: first
round's start to the last evaluation; limit: training, and evaluation with ``--evaluate``);
``peak_mb`` is the peak of the summed
resident memory of the contender's process tree (sampled every 0.1 s from /proc; Flower runs
many processes). Ratios are medians of the per-repeat ratios (each repeat's contenders ran
back to back). ``--device cuda`` runs the fedweave contenders (``vectorized``, ``loop`` and
``auto``), the plain loop and the limit on the GPU; without CUDA it prints "not measured".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
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
DEFAULT_FLOWER = Path("/work/venvs/flower/bin/python")
DEFAULTS = "fedweave run (defaults)"
PLAIN = "plain PyTorch loop"
LIMIT = "batched limit (limit.py)"
LIMIT_EVAL = "batched limit + evaluation (limit.py --evaluate)"
FLOWER = "Flower run_simulation"


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


def measure(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> dict[str, Any]:
    """Run ``cmd`` as a fresh process group; whole time, peak tree RSS, its JSON line, and for
    fedweave the summary.json of the run it wrote under ``--out``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=cwd, start_new_session=True)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        os.killpg(proc.pid, signal.SIGTERM)  # the group this call started
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
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
            timing = summary.get("timing") or {}
            result.update(round_loop_s=timing.get("rounds_s", summary["wall_s"]),
                          test_acc=summary["final"]["test_acc"], engine=summary["backend"],
                          threads=summary.get("environment", {}).get("threads"),
                          timing=timing)
    if timed_out:
        result["error"] = f"timed out after {timeout:.0f} s"
    elif proc.returncode:
        result["error"] = " | ".join((err or out).strip().splitlines()[-3:])
    return result


def flower_python(arg: str | None) -> Path | None:
    for candidate in (arg, os.environ.get("FEDWEAVE_FLOWER_PYTHON"), DEFAULT_FLOWER):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def contenders(args: argparse.Namespace, out_dir: Path) -> dict[str, list[str]]:
    py = sys.executable
    rounds = ["--rounds", str(args.rounds)] if args.rounds else []
    sets = ["--set", f"rounds={args.rounds}"] if args.rounds else []
    cuda = args.device == "cuda"
    dev_set = ["--set", "engine.device=cuda"] if cuda else []
    dev_arg = ["--device", "cuda"] if cuda else []
    out = {DEFAULTS: [py, "-m", "fedweave", "run", str(args.defaults_config), *sets, *dev_set,
                      "--out", str(out_dir / "defaults")]}
    backends = args.backends or (["vectorized", "loop", "auto"] if cuda else ["auto"])
    for b in backends:
        name = (f"fedweave tuned ({b}, threads {args.threads}, eval once, no checkpoints, "
                "no validation)")
        out[name] = [py, "-m", "fedweave", "run", str(args.config), *sets, *dev_set,
                     "--set", f"engine.threads={args.threads}", "--set", f"engine.name={b}",
                     "--out", str(out_dir / f"tuned-{b}")]
    out[PLAIN] = [py, str(HERE / "plain_fedavg.py"), str(args.config), *rounds, *dev_arg]
    out[LIMIT] = [py, str(HERE / "limit.py"), str(args.config), *rounds,
                  "--threads", str(args.threads), *dev_arg]
    out[LIMIT_EVAL] = [py, str(HERE / "limit.py"), str(args.defaults_config), *rounds,
                       "--threads", str(args.threads), "--evaluate", *dev_arg]
    flower = flower_python(args.flower_python)
    if flower is not None and not cuda:
        out[FLOWER] = [str(flower), str(HERE / "flower_fedavg.py"), str(args.config), *rounds]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "configs" / "cross-device-mlp.yaml",
                        help="the tuned contender's config (also the workload of the others)")
    parser.add_argument("--defaults-config", type=Path,
                        default=HERE / "configs" / "cross-device-mlp-defaults.yaml")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads of the tuned fedweave contender and of the limit")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--backends", nargs="+", default=None,
                        help="engine.name of the tuned contenders (default: auto; on CUDA "
                        "vectorized loop auto)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--flower-python", default=None,
                        help="python of a venv with flwr[simulation] (or $FEDWEAVE_FLOWER_PYTHON)")
    parser.add_argument("--only", nargs="+", default=None,
                        help="keep the contenders whose name starts with one of these")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/cross_device.py", *sys.argv[1:]]),
        "config": str(args.config), "defaults_config": str(args.defaults_config),
        "device": args.device, "threads": args.threads, "repeats": args.repeats,
        "rounds": args.rounds, "cpus": os.cpu_count(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if args.device == "cuda" and not cuda_available():
        print("cross-device on CUDA: not measured (no CUDA)")
        report["status"] = "not measured (no CUDA)"
        _write(args.json, report)
        return
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1"}
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        runs = contenders(args, Path(tmp))
        if args.only:
            runs = {n: c for n, c in runs.items() if any(n.startswith(o) for o in args.only)}
        report["commands"] = {n: " ".join(c) for n, c in runs.items()}
        results = interleave(runs, args.repeats, env, args.timeout)
    load.append(os.getloadavg())
    flower_note = None if flower_python(args.flower_python) else "not installed"
    if args.device == "cuda":
        flower_note = "not run on CUDA"
    print(table(results, flower_note))
    print(ratios(results))
    report.update(load_avg_start_end=load, results=results, flower=flower_note or "measured",
                  ratios=ratio_values(results))
    _write(args.json, report)


def interleave(runs: dict[str, list[str]], repeats: int, env: dict[str, str], timeout: float
               ) -> dict[str, list[dict[str, Any]]]:
    """Every contender once per repeat, in turn (A, B, A, B, ...), each a fresh process;
    one progress line per measurement on stderr."""
    results: dict[str, list[dict[str, Any]]] = {}
    for rep in range(repeats):
        for name, cmd in runs.items():
            r = measure(cmd, env, ROOT, timeout)
            results.setdefault(name, []).append(r)
            print(f"  [{rep + 1}/{repeats}] {name[:40]:40s} whole {r['whole_s']:7.2f} s"
                  f"  loop {r.get('round_loop_s', float('nan')):7.2f} s  "
                  f"acc {r.get('test_acc', float('nan')):.4f}"
                  + (f"  ERROR {r['error']}" if "error" in r else ""),
                  file=sys.stderr, flush=True)
    return results


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _write(path: Path | None, report: dict[str, Any]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1))
        print(f"written {path}")


def _stat(rows: list[dict[str, Any]], key: str) -> tuple[float, float, float]:
    vals = [r[key] for r in rows if key in r and "error" not in r]
    if not vals:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(vals), min(vals), max(vals)


def table(results: dict[str, list[dict[str, Any]]], flower_note: str | None = None) -> str:
    head = ("| contender | whole process s | round loop s | peak MB | test acc | note |\n"
            "|---|---|---|---|---|---|")
    lines = [head]
    for name, rows in results.items():
        w, lp, pk, acc = (_stat(rows, k) for k in ("whole_s", "round_loop_s", "peak_mb",
                                                    "test_acc"))
        notes = sorted({f"engine {r['engine']}, threads {r.get('threads')}" for r in rows
                        if "engine" in r})
        errors = [r["error"] for r in rows if "error" in r]
        note = "; ".join([*notes, *(f"{len(errors)} failed: {errors[0]}" for _ in errors[:1])])
        lines.append(f"| {name} | {w[0]:.2f} ({w[1]:.2f}–{w[2]:.2f}) | {lp[0]:.2f} "
                     f"({lp[1]:.2f}–{lp[2]:.2f}) | {pk[0]:.0f} | {acc[0]:.3f} | {note} |")
    if flower_note and FLOWER not in results:
        lines.append(f"| {FLOWER} | {flower_note} | | | | |")
    return "\n".join(lines)


def _paired(results: dict[str, list[dict[str, Any]]], num: str, den: str, key: str
            ) -> tuple[float, float, float] | None:
    """Median (min, max) over repeats of results[num][i][key] / results[den][i][key]."""
    if num not in results or den not in results:
        return None
    vals = [a[key] / b[key] for a, b in zip(results[num], results[den], strict=False)
            if key in a and key in b and "error" not in a and "error" not in b and b[key] > 0]
    if not vals:
        return None
    return statistics.median(vals), min(vals), max(vals)


def _pairs(results: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str, str, str]]:
    """(label, numerator, denominator, key): speed-ups (> 1 = fedweave faster)."""
    fedweave = [n for n in results if n.startswith("fedweave")]
    out = []
    for fw in fedweave:
        short = "defaults" if fw == DEFAULTS else "tuned " + fw.split("(")[1].split(",")[0]
        out += [(f"whole process, plain loop / fedweave {short}", PLAIN, fw, "whole_s"),
                (f"round loop, plain loop / fedweave {short}", PLAIN, fw, "round_loop_s"),
                (f"whole process, Flower / fedweave {short}", FLOWER, fw, "whole_s"),
                (f"round loop, Flower / fedweave {short}", FLOWER, fw, "round_loop_s"),
                (f"round loop, fedweave {short} / batched limit", fw, LIMIT, "round_loop_s")]
    if DEFAULTS in results:
        out.append(("round loop, fedweave defaults / batched limit + evaluation", DEFAULTS,
                    LIMIT_EVAL, "round_loop_s"))
    return out


def ratio_values(results: dict[str, list[dict[str, Any]]]) -> dict[str, list[float]]:
    out = {}
    for label, num, den, key in _pairs(results):
        r = _paired(results, num, den, key)
        if r is not None:
            out[label] = list(r)
    return out


def ratios(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["\nratios (median of per-repeat ratios, min–max):"]
    for label, (med, lo, hi) in ratio_values(results).items():
        lines.append(f"  {label:62s} {med:6.2f}×  ({lo:.2f}–{hi:.2f})")
    d = results.get(DEFAULTS)
    if d:
        t = [r.get("timing") or {} for r in d if "error" not in r]
        over = [r["whole_s"] - r["round_loop_s"] for r in d if "round_loop_s" in r]
        if over:
            setup = statistics.median(x.get("setup_s", 0) for x in t)
            finish = statistics.median(x.get("finish_s", 0) for x in t)
            lines.append(f"  fedweave defaults, whole − round loop: "
                         f"{statistics.median(over):.2f} s (setup {setup:.2f} s, "
                         f"finish {finish:.2f} s)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
