"""Asynchronous throughput (issue 12): client updates per wall second of FedAsync and FedBuff
with 1000 clients and 100 in flight, against synchronous FedAvg with cohorts of 100, on the
same engine.

Fashion-MNIST (60,000 training images, IID over 1000 clients), the 2NN MLP (200-200), jobs of
``--steps`` local steps of batch 20, log-normal client speeds (σ 0.5) so asynchronous arrivals
spread out. FedAvg runs ``--updates / 100`` rounds of 100 clients; FedAsync ``--updates``
server updates (one client update each); FedBuff (K = 10) ``--updates / 10``. Every method
trains the same number of client jobs; timing covers the round loop and one final evaluation
(data loading and model set-up excluded; ``engine.name`` forced, so no calibration).

    python benchmarks/async_throughput.py [--updates 1000] [--steps 5] [--backend vectorized]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fedweave.data.federated import build_federated_data
from fedweave.plugins import load_config
from fedweave.runner import Runner

ROOT = Path(__file__).resolve().parents[1]


def base(steps: int, backend: str) -> list[str]:
    return ["data.dataset=fashion-mnist", "data.nodes=1000", "data.partition=iid",
            "data.val_fraction=0", "model.name=mlp", "train.batch_size=20",
            f"train.local_steps={steps}", "train.lr=0.05", "clock.speed_sigma=0.5",
            f"engine.name={backend}", "engine.threads=1", "output.plots=false",
            "output.progress=false", "output.checkpoint_every=0"]


def measure(name: str, overrides: list[str], client_updates: int, data: object) -> dict:
    cfg = load_config(None, overrides)
    runner = Runner(cfg, None, data=data)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    res = runner.run()
    wall = time.perf_counter() - t0
    return {"method": name, "client_updates": client_updates, "wall_s": wall,
            "updates_per_s": client_updates / wall, "test_acc": res.summary["final"]["test_acc"],
            "sim_time_s": res.summary["sim_time_s"], "engine": res.summary["engine"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--updates", type=int, default=1000, help="client updates per method")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--backend", default="vectorized")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" /
                    "async-throughput.json")
    args = ap.parse_args()
    common = base(args.steps, args.backend)
    data = build_federated_data(load_config(None, common).data, 0)
    n = args.updates
    rows = [
        measure("fedavg (cohort 100)", [*common, "algorithm.name=fedavg",
                                        "algorithm.clients_per_round=100", f"rounds={n // 100}",
                                        f"output.eval_every={n // 100}"], n, data),
        measure("fedasync (C=100)", [*common, "algorithm.name=fedasync",
                                     "algorithm.concurrency=100", f"rounds={n}",
                                     f"output.eval_every={n}"], n, data),
        measure("fedbuff (C=100, K=10)", [*common, "algorithm.name=fedbuff",
                                          "algorithm.concurrency=100", "algorithm.buffer_size=10",
                                          f"rounds={n // 10}", f"output.eval_every={n // 10}"],
                n, data),
    ]
    sync = rows[0]["updates_per_s"]
    print("| method | client updates | wall s | updates / s | vs FedAvg | test acc |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        r["vs_fedavg"] = r["updates_per_s"] / sync
        print(f"| {r['method']} | {r['client_updates']} | {r['wall_s']:.1f} | "
              f"{r['updates_per_s']:.1f} | {r['vs_fedavg']:.2f}× | {r['test_acc']:.4f} |")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)},
                                     "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
