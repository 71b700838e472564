"""Start-up time: ``python -c "import torch"`` beside ``fedweave run`` up to its first round, and
``fedweave --version`` / ``--help``, whole processes interleaved (a load spike hits every
contender), wall and CPU seconds (medians).

    python benchmarks/startup.py [--reps 5] [--set KEY=VALUE ...]

The first round is marked by a plugin callback (``on_start``, just before round 1) that prints
the seconds since the process started (from ``/proc``, Linux) and its CPU seconds. Targets:
first round ≤ 1.0 s after ``import torch``; ``--version`` and ``--help`` ≤ 0.3 s, without torch.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN = '''
import os, time
from fedweave.callbacks import Callback, register_callback

def since_start():
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return up - int(fields[19]) / os.sysconf("SC_CLK_TCK")

class FirstRound(Callback):
    def on_start(self, runner):
        print(f"FIRST_ROUND wall={since_start():.3f} cpu={time.process_time():.3f}", flush=True)

register_callback(lambda config: FirstRound())
'''


def timed(cmd: list[str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the child, its output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, out.stdout + out.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--set", action="append", default=[], dest="sets")
    args = parser.parse_args()
    rows: dict[str, list[tuple[float, float]]] = {
        "import torch": [], "run: first round": [], "--version": [], "--help": []}
    with tempfile.TemporaryDirectory() as tmp:
        plugin = Path(tmp) / "first_round.py"
        plugin.write_text(PLUGIN)
        run = [sys.executable, "-m", "fedweave", "run", "--import", str(plugin), "--set",
               "rounds=1", "--set", "output.plots=false", "--out", str(Path(tmp) / "runs"),
               *[a for kv in args.sets for a in ("--set", kv)]]
        for _ in range(args.reps):
            rows["import torch"].append(timed([sys.executable, "-c", "import torch"])[:2])
            out = timed(run)[2]
            found = re.search(r"FIRST_ROUND wall=([\d.]+) cpu=([\d.]+)", out)
            if found is None:
                sys.exit(f"no first-round line in the run's output:\n{out[-2000:]}")
            rows["run: first round"].append((float(found.group(1)), float(found.group(2))))
            for flag in ("--version", "--help"):
                rows[flag].append(timed([sys.executable, "-m", "fedweave", flag])[:2])
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in rows.items()}
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, {args.reps} reps, "
          "medians")
    for name, (wall, cpu) in med.items():
        print(f"  {name:18s} wall {wall:6.3f} s   CPU {cpu:6.3f} s")
    first, torch_ = med["run: first round"], med["import torch"]
    print(f"  first round after import torch: wall {first[0] - torch_[0]:+.3f} s, "
          f"CPU {first[1] - torch_[1]:+.3f} s (target ≤ +1.0 s)")


if __name__ == "__main__":
    main()
