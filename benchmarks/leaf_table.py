"""FedAvg, FedProx, SCAFFOLD, FedBuff and PR-FL on LEAF-format Shakespeare and FEMNIST files
and on Synthetic(1, 1) with 100 users, under the shipped example device trace.

The LEAF-format files are written by the tests' generators (``tests/test_leaf_sources.py``
``write_shakespeare``: windows of a fixed Shakespeare passage, one role per user;
``tests/test_sources.py`` ``write_leaf``: FEMNIST json with random pixels, so its accuracy is
chance level by construction: it measures the format and the clock, not learning). Every run
uses ``clock.trace: configs/traces/example-300.json`` (client i = device i, online windows
included), one thread and the loop engine, and records the final test accuracy, the simulated
seconds and the simulated seconds to ``--target`` test accuracy (``output.target_acc`` →
summary.json ``time_to_target``; "–" when never reached).

    python benchmarks/leaf_table.py [--rounds 20] [--out benchmarks/results/leaf-table]
        [--datasets shakespeare,femnist,synthetic] [--methods fedavg,fedprox,...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedweave.plugins import load_config
from fedweave.runner import run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_leaf_sources import write_shakespeare  # type: ignore[import-not-found]  # noqa: E402
from test_sources import write_leaf  # type: ignore[import-not-found]  # noqa: E402

TRACE = ROOT / "configs" / "traces" / "example-300.json"
METHODS = {
    "fedavg": ["algorithm.name=fedavg", "algorithm.clients_per_round=10"],
    "fedprox": ["algorithm.name=fedprox", "algorithm.clients_per_round=10",
                "algorithm.prox_mu=0.1"],
    "scaffold": ["algorithm.name=scaffold", "algorithm.clients_per_round=10"],
    "fedbuff": ["algorithm.name=fedbuff", "algorithm.buffer_size=5",
                "algorithm.concurrency=10"],
    "prfl": ["algorithm.name=prfl", "algorithm.concurrency=10"],  # + densities per client
}
#: PR-FL's initial densities of its 10 clients (fedweave.sim.clock.PRFL_DENSITIES), client i
#: taking entry i mod 10
PRFL_DENSITIES = (1.0, 1.0, 0.6, 0.6, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1)


def make_data(root: Path) -> None:
    """40 Shakespeare roles (context 20) and 40 FEMNIST writers, in LEAF's json format."""
    if not (root / "shakespeare").exists():
        write_shakespeare(root, {f"ROLE_{i:02d}": 30 + i % 7 for i in range(40)},
                          {f"ROLE_{i:02d}": 6 for i in range(40)}, context=20)
    if not (root / "femnist").exists():
        for k in range(4):
            write_leaf(root / "femnist" / "train",
                       {f"f{10 * k + i:04d}_00": 20 for i in range(10)}, k)
            write_leaf(root / "femnist" / "test",
                       {f"f{10 * k + i:04d}_00": 4 for i in range(10)}, 10 + k)


DATASETS = {
    "shakespeare": (["data.dataset=shakespeare", "data.nodes=40", "data.partition=natural",
                     "model.name=transformer", "model.width=0.5", "train.lr=0.5"], 0.3),
    "femnist": (["data.dataset=femnist", "data.nodes=40", "data.partition=natural",
                 "model.name=mlp", "model.hidden=[64]", "train.lr=0.05"], 0.05),
    "synthetic": (["data.dataset=synthetic", "data.nodes=100", "data.partition=natural",
                   "data.synthetic.alpha=1", "data.synthetic.beta=1", "model.name=logistic",
                   "train.lr=0.01"], 0.6),
}


def _densities(method: str, keys: list[str]) -> list[str]:
    if method != "prfl":
        return []
    n = int(next(k for k in keys if k.startswith("data.nodes=")).split("=")[1])
    return [f"algorithm.densities={[PRFL_DENSITIES[i % 10] for i in range(n)]}"]


def one(dataset: str, method: str, rounds: int, data: Path, out: Path) -> dict[str, Any]:
    keys, target = DATASETS[dataset]
    cfg = load_config(None, [
        f"name={dataset}-{method}", f"rounds={rounds}", f"data.root={data}", *keys,
        "train.batch_size=10", "train.local_steps=5", "engine.name=loop",
        "engine.threads=1", f"clock.trace={TRACE}", "output.plots=false",
        "output.progress=false", f"output.dir={out}", f"output.target_acc={target}",
        *METHODS[method], *_densities(method, keys)])
    s = run(cfg).summary
    ttt = s.get("time_to_target") or {}
    return {"dataset": dataset, "method": method, "target": target,
            "test_acc": s["final"]["test_acc"], "sim_time_s": s["sim_time_s"],
            "to_target_s": ttt.get("sim_s"), "to_target_update": ttt.get("update")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "leaf-table")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args()
    data = args.out / "data"
    make_data(data)
    rows = []
    print("| data | method | final test acc | sim s | target | sim s to target (update) |")
    print("|---|---|---|---|---|---|")
    for dataset in args.datasets.split(","):
        for method in args.methods.split(","):
            try:
                r = one(dataset, method, args.rounds, data, args.out / "runs")
            except Exception as e:  # a method that cannot run this setting: say why
                r = {"dataset": dataset, "method": method, "error": f"{type(e).__name__}: {e}"}
                print(f"| {dataset} | {method} | error: {r['error'][:120]} | | | |", flush=True)
                rows.append(r)
                continue
            rows.append(r)
            reach = ("–" if r["to_target_s"] is None
                     else f"{r['to_target_s']:.0f} ({r['to_target_update']})")
            print(f"| {dataset} | {method} | {r['test_acc']:.4f} | {r['sim_time_s']:.0f} | "
                  f"{r['target']} | {reach} |", flush=True)
    (args.out / "table.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
