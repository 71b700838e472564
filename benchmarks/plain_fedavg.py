"""The cross-device workload written the obvious way in plain PyTorch (a contender of
``benchmarks/cross_device.py``): read Fashion-MNIST's idx files with numpy, IID shards, per
sampled client a ``copy.deepcopy`` of the global model, a ``torch.optim.SGD`` and a
``DataLoader`` over its shard, the server averages the state dicts weighted by shard size and
evaluates the global model on the test set every round (``--eval-every``; the last round is
always evaluated), printing one line per evaluation as a researcher's script would.

    python benchmarks/plain_fedavg.py benchmarks/configs/cross-device-mlp.yaml [--threads 2]
        [--eval-every 1] [--device cpu|cuda]

``--threads`` unset leaves torch's default. Prints one JSON line: round-loop seconds
(training and evaluation) and the final test loss and accuracy.
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = yaml.safe_load(args.config.read_text())
    rounds = args.rounds or cfg["rounds"]
    clients, per_round = cfg["data"]["nodes"], cfg["algorithm"]["clients_per_round"]
    lr, batch = cfg["train"]["lr"], cfg["train"]["batch_size"]
    x = torch.tensor(idx(FMNIST / "train-images-idx3-ubyte.gz"), dtype=torch.float32) / 255
    y = torch.tensor(idx(FMNIST / "train-labels-idx1-ubyte.gz"), dtype=torch.int64)
    tx = torch.tensor(idx(FMNIST / "t10k-images-idx3-ubyte.gz"), dtype=torch.float32) / 255
    ty = torch.tensor(idx(FMNIST / "t10k-labels-idx1-ubyte.gz"), dtype=torch.int64)
    x, tx = x.view(len(x), -1).to(dev), tx.view(len(tx), -1).to(dev)
    y, ty = y.to(dev), ty.to(dev)
    rng = np.random.default_rng(cfg["seed"])
    shards = np.array_split(rng.permutation(len(y)), clients)
    torch.manual_seed(cfg["seed"])
    hidden = cfg["model"].get("hidden", [])
    layers: list[nn.Module] = []
    width = 784
    for h in hidden if cfg["model"]["name"] == "mlp" else []:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    model = nn.Sequential(*layers, nn.Linear(width, 10)).to(dev)
    loss = acc = float("nan")
    t0 = time.perf_counter()
    for r in range(rounds):
        cohort = rng.choice(clients, per_round, replace=False)
        states, weights = [], []
        for c in cohort:
            local = copy.deepcopy(model)
            opt = torch.optim.SGD(local.parameters(), lr=lr)
            ids = torch.from_numpy(shards[c]).to(dev)
            for xb, yb in DataLoader(TensorDataset(x[ids], y[ids]), batch_size=batch,
                                     shuffle=True):
                opt.zero_grad()
                F.cross_entropy(local(xb), yb).backward()
                opt.step()
            states.append(local.state_dict())
            weights.append(len(ids))
        total = sum(weights)
        pairs = list(zip(weights, states, strict=True))
        model.load_state_dict({k: sum(w / total * s[k] for w, s in pairs) for k in states[0]})
        if (r + 1) % args.eval_every == 0 or r + 1 == rounds:
            with torch.no_grad():
                out = model(tx)
                loss = float(F.cross_entropy(out, ty))
                acc = float((out.argmax(1) == ty).double().mean())
            print(f"round {r + 1}/{rounds}  test loss {loss:.4f} acc {acc:.4f}", file=sys.stderr)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    loop_s = time.perf_counter() - t0
    print(json.dumps({"round_loop_s": loop_s, "test_loss": loss, "test_acc": acc}))


if __name__ == "__main__":
    main()
