"""fedweave's default experiment written the obvious way in plain PyTorch (a contender of
``benchmarks/digits_default.py``; no fedweave import anywhere in this process).

The experiment (``configs/default.yaml``): FedAvg on scikit-learn's 8×8 digits, 10 clients
(Dirichlet 0.5 label skew, 10% of each client's samples held out for validation), all 10
clients every round, the GroupNorm CNN (conv3×3 32 → GN → ReLU → max-pool, conv3×3 64 → GN →
ReLU → max-pool, adaptive average pool 2×2, FC 128, FC 10), SGD lr 0.05, batch 32, one local
epoch, 30 rounds, inputs standardised.

The loop: read ``digits.csv.gz`` (scikit-learn's bundled file) with numpy, per client a
``copy.deepcopy`` of the global model, a ``torch.optim.SGD`` and a shuffled ``DataLoader`` over
its shard, the server averages the state dicts weighted by shard size, then evaluates the
global model every round on the test set, on the pooled validation set and on every client's
validation set (what ``fedweave run`` reports per round), printing one line per round and
remembering the best round by validation accuracy.

The split file (``--split``, written by ``digits_default.py`` from fedweave's own partition so
both contenders train on identical shards) holds only integers and the initial weights: the
rows of the CSV that are test samples, each client's training and validation rows, the
per-channel mean/std, and the initial state dict (the same initial model as fedweave's).

    python benchmarks/plain_digits.py --split SPLIT.pt [--rounds 30] [--threads N]

Prints one JSON line: round-loop seconds (training + evaluation) and the final metrics.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.GroupNorm(1, 32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.GroupNorm(2, 64), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(), nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, 10))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    out = model(x)
    return float(F.cross_entropy(out, y)), float((out.argmax(1) == y).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    split = torch.load(args.split)
    table = np.loadtxt(split["csv"], delimiter=",")
    images = np.rint(table[:, :-1] * (255.0 / 16.0)).reshape(-1, 1, 8, 8)
    mean, std = split["mean"], split["std"]
    x_all = (torch.tensor(images, dtype=torch.float32) / 255 - mean) / std
    y_all = torch.tensor(table[:, -1], dtype=torch.int64)
    tx, ty = x_all[split["test_rows"]], y_all[split["test_rows"]]
    train_rows, val_rows = split["train_rows"], split["val_rows"]
    val_all = torch.cat(val_rows)
    model = cnn()
    model.load_state_dict(split["init"])
    best = (-1.0, 0)
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    for r in range(args.rounds):
        states, weights = [], []
        for rows in train_rows:
            local = copy.deepcopy(model)
            opt = torch.optim.SGD(local.parameters(), lr=args.lr)
            for xb, yb in DataLoader(TensorDataset(x_all[rows], y_all[rows]),
                                     batch_size=args.batch, shuffle=True):
                opt.zero_grad()
                F.cross_entropy(local(xb), yb).backward()
                opt.step()
            states.append(local.state_dict())
            weights.append(len(rows))
        total = sum(weights)
        pairs = list(zip(weights, states, strict=True))
        model.load_state_dict({k: sum(w / total * s[k] for w, s in pairs) for k in states[0]})
        test_loss, test_acc = evaluate(model, tx, ty)
        val_loss, val_acc = evaluate(model, x_all[val_all], y_all[val_all])
        clients = [evaluate(model, x_all[v], y_all[v])[1] for v in val_rows if len(v)]
        metrics = {"test_loss": test_loss, "test_acc": test_acc, "val_loss": val_loss,
                   "val_acc": val_acc, "clients_val_acc_min": min(clients),
                   "clients_val_acc_mean": sum(clients) / len(clients)}
        if val_acc > best[0]:
            best = (val_acc, r + 1)
        print(f"round {r + 1}/{args.rounds}  val acc {val_acc:.4f}  test loss {test_loss:.4f} "
              f"acc {test_acc:.4f}", file=sys.stderr)
    loop_s = time.perf_counter() - t0
    print(json.dumps({"round_loop_s": loop_s, **metrics, "best_round": best[1]}))


if __name__ == "__main__":
    main()
