"""ECL-ISVR comparison table (Niwa et al. 2021 setting; REFERENCE §3, seed 001).

8 nodes, each holding 8 of the 10 Fashion-MNIST classes (``partition: classes``, shares
U(0.8, 1)), validation = the node's own training shard, a sparse graph (ring by default),
multinomial logistic regression with ½λ‖w‖² (λ = 0.01), batch 100, constant lr. Every
decentralized algorithm runs the same epochs on the same shards; the centralized reference
trains one model on the union with the same batch size and lr. Prints a markdown table of the
final test accuracy of the node models (mean / min / max over nodes).

    python benchmarks/ecl_isvr_table.py [--epochs 20] [--train-samples 12000] [--lr 0.05]
        [--topology ring] [--seeds 0] [--algorithms dsgd,pdmm_isvr,...]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedweave.config import load_config
from fedweave.data.federated import build_federated_data
from fedweave.runner import Runner

ALL = ["centralized", "dsgd", "gossip", "admm_sgd", "pdmm_sgd", "pdmm_isvr", "admm_isvr",
       "cadmm", "gradient_tracking", "d2"]


def overrides(algorithm: str, epochs: int, train_samples: int, lr: float, topology: str,
              seed: int) -> list[str]:
    out = [f"seed={seed}", f"rounds={epochs}", "data.dataset=fashion-mnist",
           "data.root=/usr/share/datasets/fashion-mnist", "data.nodes=8",
           "data.partition=classes", "data.classes_per_node=8", "data.val_from_train=true",
           f"data.train_samples={train_samples}", "model.name=logistic",
           "train.batch_size=100", "train.l2_lambda=0.01", f"train.lr={lr}",
           f"topology.name={topology}", "topology.degree=3", f"algorithm.name={algorithm}",
           "output.plots=false", "output.progress=false", "output.checkpoint_every=0",
           f"output.eval_every={epochs}"]
    if algorithm in ("pdmm_isvr", "admm_isvr"):
        out.append("algorithm.exchange_period=4")  # ≥ Δ+1: one exchange per node per step
    return out


def run_table(algorithms: list[str], epochs: int = 20, train_samples: int = 12000,
              lr: float = 0.05, topology: str = "ring", seed: int = 0
              ) -> dict[str, dict[str, float]]:
    """{algorithm: {"mean", "min", "max", "seconds"}} of the final node test accuracies."""
    data = None
    rows: dict[str, dict[str, float]] = {}
    for name in algorithms:
        cfg = load_config(None, overrides(name, epochs, train_samples, lr, topology, seed))
        if data is None:
            data = build_federated_data(cfg.data, cfg.seed)
        t0 = time.perf_counter()
        final = Runner(cfg, None, data=data).run().summary["final"]
        rows[name] = {"mean": final["test_acc"],
                      "min": final.get("test_acc_min", final["test_acc"]),
                      "max": final.get("test_acc_max", final["test_acc"]),
                      "seconds": time.perf_counter() - t0}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--train-samples", type=int, default=12000)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--topology", default="ring")
    parser.add_argument("--seeds", default="0", help="comma list; the table averages seeds")
    parser.add_argument("--algorithms", default=",".join(ALL))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    algorithms = args.algorithms.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    tables = [run_table(algorithms, args.epochs, args.train_samples, args.lr, args.topology, s)
              for s in seeds]
    print(f"Fashion-MNIST, 8 nodes, 8-of-10 classes per node, {args.topology}, logistic, "
          f"λ=0.01, batch 100, lr {args.lr}, {args.epochs} epochs, "
          f"{args.train_samples} training samples, seeds {seeds}\n")
    print("| algorithm | test acc mean | min node | max node | seconds |")
    print("|---|---|---|---|---|")
    for name in algorithms:
        vals = {k: statistics.mean(t[name][k] for t in tables)
                for k in ("mean", "min", "max", "seconds")}
        print(f"| {name} | {vals['mean']:.4f} | {vals['min']:.4f} | {vals['max']:.4f} | "
              f"{vals['seconds']:.1f} |")


if __name__ == "__main__":
    main()
