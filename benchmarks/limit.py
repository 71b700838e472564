"""The compute limit of a cross-device FedAvg round: the same SGD steps as fedweave, written by
hand as one batched computation per step.

    python benchmarks/limit.py benchmarks/configs/cross-device-mlp.yaml [--threads 2]
        [--device cpu|cuda] [--evaluate]

For each round: the cohort (fedweave's own sampler), per client a random order of its shard
cut into batches, the cohort's models as per-layer ``[K, out, in]`` stacks copied from the
global model, then per step ``z = baddbmm(b, a, Wᵀ)``, ReLU, the softmax cross-entropy
gradient, and the update fused into the gradient product (``W.baddbmm_(δᵀ, a, alpha=−lr)``):
nothing is allocated per step but the activations. The server averages the stacks (equal
shards: the plain mean). Prints one JSON line: round-loop seconds (data already in memory),
test accuracy at the end, the number of local steps. It supports exactly the workloads of
``benchmarks/configs/cross-device-*.yaml`` (Linear/ReLU stacks, plain SGD, equal shards).

``--evaluate`` adds, after every round, the evaluation ``fedweave run`` does at its defaults,
written the cheapest way: the global model on the whole test set and on the validation samples
of the round's cohort (once; fedweave pools them and also scores them per client), the
per-sample losses summed in float64. The round loop then holds the same work as fedweave's
default round loop minus records and checkpoints: the limit of *that* loop.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--evaluate", action="store_true",
                        help="evaluate as fedweave's defaults do, every round (docstring)")
    args = parser.parse_args()
    dev = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    from fedweave.algorithms.federated.sampling import cohort_size, sample_cohort
    from fedweave.data.federated import build_federated_data
    from fedweave.plugins import load_config

    cfg = load_config(args.config, [f"rounds={args.rounds}"] if args.rounds else [])
    data = build_federated_data(cfg.data, cfg.seed)
    x_all = data.features(data.x).flatten(1).to(dev)    # [N_samples, D] float, once
    y_all = data.y.to(dev)
    shards = torch.stack(data.train_idx).to(dev)        # equal shards: [clients, n]
    n_clients, n = shards.shape
    hidden = list(cfg.model.hidden) if cfg.model.name == "mlp" else []
    sizes = [x_all.shape[1], *hidden, data.num_classes]
    from fedweave.models import build_model
    from fedweave.rng import derive_seed

    torch.manual_seed(derive_seed(cfg.seed, "init"))  # fedweave's initial model
    linears = [m for m in build_model(cfg.model, data.input_shape, data.num_classes).modules()
               if isinstance(m, torch.nn.Linear)]
    assert [m.in_features for m in linears] == sizes[:-1], "a Linear/ReLU stack only"
    weights = [m.weight.detach().to(dev, copy=True) for m in linears]
    biases = [m.bias.detach().to(dev, copy=True) for m in linears]
    b = min(cfg.train.batch_size, n)
    steps = -(-n // b)
    k = cohort_size(n_clients, cfg.algorithm.clients_per_round, None)
    lr = cfg.train.lr
    gen = torch.Generator().manual_seed(cfg.seed)
    test_x = data.features(data.test_x).flatten(1).to(dev)
    test_y = data.test_y.to(dev)

    def evaluate(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        a = x
        for i, (w, bias) in enumerate(zip(weights, biases, strict=True)):
            a = F.linear(a, w, bias)
            a = a.relu() if i < len(weights) - 1 else a
        loss = F.cross_entropy(a, y, reduction="none").double().sum()
        return float(loss), float((a.argmax(1) == y).sum())

    t0 = time.perf_counter()
    for r in range(cfg.rounds):
        cohort = sample_cohort(cfg.seed, r, n_clients, k).to(dev)
        order = torch.rand(k, n, generator=gen).argsort(1).to(dev)
        idx = shards[cohort].gather(1, order)                       # [K, n]
        ws = [w.expand(k, -1, -1).clone() for w in weights]        # [K, out, in]
        bs = [v.expand(k, -1).clone() for v in biases]
        for s in range(steps):
            rows = idx[:, s * b: (s + 1) * b]
            a0 = x_all[rows]                                        # [K, B, D]
            y = y_all[rows]
            acts, a = [a0], a0
            for i, (w, bias) in enumerate(zip(ws, bs, strict=True)):
                z = torch.baddbmm(bias.unsqueeze(1), a, w.transpose(1, 2))
                a = z.relu_() if i < len(ws) - 1 else z
                acts.append(a)
            delta = torch.softmax(acts[-1], -1)
            delta.scatter_add_(-1, y.unsqueeze(-1), -torch.ones(*y.shape, 1, device=dev))
            delta.div_(rows.shape[1])
            for i in range(len(ws) - 1, -1, -1):
                prev = acts[i]
                back = torch.bmm(delta, ws[i]).mul_(prev > 0) if i > 0 else None
                ws[i].baddbmm_(delta.transpose(1, 2), prev, alpha=-lr)
                bs[i].sub_(delta.sum(1), alpha=lr)
                if back is not None:
                    delta = back
        weights = [w.mean(0) for w in ws]
        biases = [v.mean(0) for v in bs]
        if args.evaluate:
            evaluate(test_x, test_y)
            val = torch.cat([data.val_idx[c] for c in cohort.tolist()]).to(dev)
            evaluate(x_all[val], y_all[val])
    if dev.type == "cuda":
        torch.cuda.synchronize()
    loop_s = time.perf_counter() - t0
    a = data.features(data.test_x).flatten(1).to(dev)
    for i, (w, bias) in enumerate(zip(weights, biases, strict=True)):
        a = F.linear(a, w, bias)
        a = a.relu() if i < len(weights) - 1 else a
    acc = float((a.argmax(1).cpu() == data.test_y).double().mean())
    print(json.dumps({"round_loop_s": loop_s, "test_acc": acc,
                      "local_steps": cfg.rounds * k * steps}))


if __name__ == "__main__":
    main()
