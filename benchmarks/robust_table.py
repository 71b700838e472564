"""Attack × aggregator tables on real Fashion-MNIST (issue 16).

Federated: ``configs/robust-fmnist-fedavg.yaml`` — FedAvg, 100 clients, 20 per round, 20% of
the clients attack. Peer to peer: ``configs/robust-fmnist-dsgd-ring16.yaml`` — D-SGD on a ring
of 16, nodes 0 and 8 attack, the robust rule replaces each node's neighbour average. Every cell
is the final test accuracy (federated: the global model; peer to peer: the mean over the 14
honest nodes) of one run with ``--set attack.name=<row> --set aggregator.name=<column>``
(plus the column's keys below); ``none`` is the run without attackers. Writes
``benchmarks/results/robust_<part>.json`` and prints markdown tables.

    python benchmarks/robust_table.py [--part federated|peer|both] [--rounds N]
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
ATTACKS = {"federated": ["none", "label_flip", "gaussian", "sign_flip", "scale", "alie"],
           "peer": ["none", "label_flip", "gaussian", "sign_flip", "alie"]}
FEDERATED = {
    "mean": ["aggregator.name=weighted_mean"],
    "median": ["aggregator.name=median"],
    "trimmed_mean": ["aggregator.name=trimmed_mean", "aggregator.beta=0.2"],
    "krum": ["aggregator.name=krum", "aggregator.f=4"],
    "multi_krum": ["aggregator.name=multi_krum", "aggregator.f=4", "aggregator.m=10"],
    "centered_clip": ["aggregator.name=centered_clip", "aggregator.tau=0.5",
                      "aggregator.iterations=3"],
    "norm_clip": ["aggregator.name=norm_clip", "aggregator.tau=0.5"],
}
PEER = {
    "mixing": [],  # D-SGD's own Σ_j W_ij x_j
    "median": ["aggregator.name=median"],
    "trimmed_mean": ["aggregator.name=trimmed_mean", "aggregator.beta=0.34"],
    "clipped_gossip": ["aggregator.name=centered_clip", "aggregator.tau=0.1"],
}
PARTS = {"federated": ("configs/robust-fmnist-fedavg.yaml", FEDERATED, "attack.fraction=0"),
         "peer": ("configs/robust-fmnist-dsgd-ring16.yaml", PEER, "attack.nodes=null")}


def table(part: str, rounds: int | None) -> dict[str, dict[str, float]]:
    """{attack: {rule: final test accuracy}} of one part."""
    path, rules, no_attackers = PARTS[part]
    data = None
    out: dict[str, dict[str, float]] = {}
    for attack in ATTACKS[part]:
        row = {}
        for rule, keys in rules.items():
            over = [*keys, *([f"rounds={rounds}"] if rounds else []),
                    *(["attack.name=null", no_attackers] if attack == "none"
                      else [f"attack.name={attack}"])]
            cfg = load_config(ROOT / path, over)
            if data is None:
                data = build_federated_data(cfg.data, cfg.seed)
            t0 = time.perf_counter()
            row[rule] = Runner(cfg, None, data=data).run().summary["final"]["test_acc"]
            print(f"{part:9s} {attack:12s} {rule:14s} {row[rule]:.3f} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
        out[attack] = row
    return out


def markdown(rows: dict[str, dict[str, float]]) -> str:
    rules = list(next(iter(rows.values())))
    lines = ["| attack | " + " | ".join(rules) + " |", "|---" * (len(rules) + 1) + "|"]
    for attack, row in rows.items():
        lines.append(f"| {attack} | " + " | ".join(f"{row[r]:.3f}" for r in rules) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["federated", "peer", "both"], default="both")
    ap.add_argument("--rounds", type=int, default=None, help="override the configs' rounds")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    for part in ["federated", "peer"] if args.part == "both" else [args.part]:
        rows = table(part, args.rounds)
        print(f"\n{part}\n" + markdown(rows), flush=True)
        (args.out / f"robust_{part}.json").write_text(json.dumps(
            {"config": PARTS[part][0], "rules": PARTS[part][1], "test_acc": rows}, indent=2))


if __name__ == "__main__":
    main()
