"""fedweave's default experiment (``fedweave run`` with no config: FedAvg, GroupNorm CNN,
digits, 10 clients, 30 rounds) against the same experiment as a plain PyTorch loop
(``plain_digits.py``), whole processes, interleaved, measured in one run.

    python benchmarks/digits_default.py [--repeats 3] [--rounds N]
        [--json benchmarks/results/digits-default.json]

Before the timed runs this script asks fedweave once for the default config's data split and
initial model and writes them to a split file (CSV row numbers of the test samples and of each
client's training and validation samples, the channel mean/std, the initial state dict), so
the plain loop trains the identical shards from the identical start; the plain loop itself
imports no fedweave (it reads scikit-learn's ``digits.csv.gz`` with numpy as fedweave does).

Contenders: ``fedweave run`` (``python -m fedweave run --out TMP``: every default — evaluation
of the test set, the validation set and every client each round, a checkpoint every round,
records, plots, fedweave's engine and thread choice) and the plain loop (torch's default
threads; evaluates the test set, the pooled validation set and each client's validation set
every round; writes no checkpoints, records or plots). ``whole_s`` is spawn to exit,
``round_loop_s`` is summary.json ``timing.rounds_s`` for fedweave and the timed loop for the
plain script. Ratios are medians of per-repeat ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from cross_device import _paired, _stat, _write, interleave  # noqa: E402

FEDWEAVE = "fedweave run (no config)"
PLAIN = "plain PyTorch loop (plain_digits.py)"


def write_split(path: Path) -> dict[str, Any]:
    """The default config's shards and initial model, as CSV row numbers and a state dict."""
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np
    import torch

    from fedweave.data.federated import build_federated_data
    from fedweave.data.sources.builtin import _digits_file
    from fedweave.models import build_model
    from fedweave.plugins import load_config
    from fedweave.rng import derive_seed, numpy_rng

    cfg = load_config(None, [])
    data = build_federated_data(cfg.data, cfg.seed)
    csv = _digits_file()
    target = np.loadtxt(csv, delimiter=",")[:, -1].astype(np.int64)
    rng = numpy_rng(0, "digits-split")  # fedweave's fixed stratified 20% test split
    is_test = np.zeros(len(target), dtype=bool)
    for label in range(10):
        members = rng.permutation(np.flatnonzero(target == label))
        is_test[members[: round(0.2 * len(members))]] = True
    train_rows = torch.from_numpy(np.flatnonzero(~is_test))
    assert torch.equal(torch.from_numpy(target[~is_test]), data.y), "digits split moved"
    torch.manual_seed(derive_seed(cfg.seed, "init"))
    init = build_model(cfg.model, data.input_shape, data.num_classes).state_dict()
    split = {"csv": str(csv), "test_rows": torch.from_numpy(np.flatnonzero(is_test)),
             "train_rows": [train_rows[i] for i in data.train_idx],
             "val_rows": [train_rows[i] for i in data.val_idx],
             "mean": float(data.mean[0]), "std": float(data.std[0]), "init": init}
    torch.save(split, path)
    return {"rounds": cfg.rounds, "clients": data.nodes, "model": cfg.model.name,
            "train_sizes": [len(i) for i in data.train_idx],
            "val_sizes": [len(i) for i in data.val_idx], "test": int(is_test.sum()),
            "lr": cfg.train.lr, "batch": cfg.train.batch_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per process")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), "PYTHONUNBUFFERED": "1"}
    py = sys.executable
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/digits_default.py", *sys.argv[1:]]),
        "repeats": args.repeats, "rounds": args.rounds, "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    load = [os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split.pt"
        report["workload"] = write_split(split)
        rounds = args.rounds or report["workload"]["rounds"]
        runs = {FEDWEAVE: [py, "-m", "fedweave", "run",
                           *(["--set", f"rounds={args.rounds}"] if args.rounds else []),
                           "--out", str(Path(tmp) / "runs")],
                PLAIN: [py, str(HERE / "plain_digits.py"), "--split", str(split),
                        "--rounds", str(rounds)]}
        report["commands"] = {n: " ".join(c) for n, c in runs.items()}
        results = interleave(runs, args.repeats, env, args.timeout)
    load.append(os.getloadavg())
    lines = ["| contender | whole process s | round loop s | peak MB | test acc | note |",
             "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        w, lp, pk, acc = (_stat(rows, k) for k in ("whole_s", "round_loop_s", "peak_mb",
                                                    "test_acc"))
        note = "; ".join(sorted({f"engine {r['engine']}, threads {r.get('threads')}"
                                 for r in rows if "engine" in r}))
        lines.append(f"| {name} | {w[0]:.2f} ({w[1]:.2f}–{w[2]:.2f}) | {lp[0]:.2f} "
                     f"({lp[1]:.2f}–{lp[2]:.2f}) | {pk[0]:.0f} | {acc[0]:.4f} | {note} |")
    print("\n".join(lines))
    ratio = {}
    print("\nratios (median of per-repeat ratios, min–max; > 1 = fedweave faster):")
    for key in ("whole_s", "round_loop_s"):
        r = _paired(results, PLAIN, FEDWEAVE, key)
        if r is not None:
            ratio[f"{key}: plain / fedweave"] = list(r)
            print(f"  {key:14s} plain loop / fedweave  {r[0]:.2f}×  ({r[1]:.2f}–{r[2]:.2f})")
    report.update(load_avg_start_end=load, results=results, ratios=ratio)
    _write(args.json, report)


if __name__ == "__main__":
    main()
