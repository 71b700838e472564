"""CHOCO-SGD against D-SGD: bytes per round and accuracy with each compressor.

    python benchmarks/choco_bytes.py [--rounds 20]

Runs configs/choco-digits-ring8.yaml (digits, 8 peers on a ring, MLP 64) with D-SGD and with
CHOCO-SGD under every compressor (same seed), and prints one table: bytes sent per round (all
peers), bytes relative to D-SGD, final mean test accuracy over the peers.
"""

from __future__ import annotations

import argparse

import fedweave

BASE = ["data.dataset=digits", "data.nodes=8", "data.partition=dirichlet", "data.alpha=0.5",
        "model.name=mlp", "model.hidden=[64]", "train.lr=0.05", "train.batch_size=32",
        "topology.name=ring", "output.plots=false", "output.progress=false",
        "output.checkpoint_every=0"]  # = configs/choco-digits-ring8.yaml
CONTENDERS = [
    ("dsgd", ["algorithm.name=dsgd"]),
    ("choco none (γ=1)", ["algorithm.name=choco", "algorithm.compressor=none",
                          "algorithm.gamma=1"]),
    ("choco topk 10%", ["algorithm.name=choco", "algorithm.compressor=topk",
                        "algorithm.ratio=0.1"]),
    ("choco randk 10% γ=0.1", ["algorithm.name=choco", "algorithm.compressor=randk",
                               "algorithm.ratio=0.1", "algorithm.gamma=0.1"]),
    ("choco qsgd s=16 γ=0.2", ["algorithm.name=choco", "algorithm.compressor=qsgd",
                               "algorithm.levels=16", "algorithm.gamma=0.2"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--out", default="runs/choco-bytes")
    args = ap.parse_args()
    rows = []
    for label, over in CONTENDERS:
        cfg = fedweave.load_config(None, [*BASE, f"rounds={args.rounds}",
                                          f"output.dir={args.out}", *over])
        res = fedweave.run(cfg)
        per_round = res.summary["bytes_up"] / args.rounds
        rows.append((label, per_round, res.summary["final"]["test_acc"]))
    base = rows[0][1]
    print(f"{'method':<24} {'bytes/round':>14} {'vs dsgd':>8} {'test acc':>9}")
    for label, per_round, acc in rows:
        print(f"{label:<24} {per_round:>14,.0f} {per_round / base:>8.3f} {acc:>9.4f}")


if __name__ == "__main__":
    main()
