"""Time of one synchronous D-SGD step of N nodes against one centralized step on an N-times
larger batch (the same samples, one model).

    python benchmarks/decentralized_step.py [--backend auto|loop|vectorized] [--nodes 8,32,128]
        [--models logistic,mlp] [--batch 32] [--repeats 5] [--threads 1]

A D-SGD step = gradients of all N node models on their own batch of ``--batch`` samples
(``engine.grads``), the local SGD update and the mixing x ← W x (ring, Metropolis). The
centralized step = gradient of one model on N·batch samples plus the SGD update. Inputs are
Fashion-MNIST-shaped (1×28×28, 10 classes): the real data when installed, else random
tensors of that shape. Prints a markdown table: median ms per step and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedweave.config import load_config
from fedweave.data.sources import dataset_status
from fedweave.runner import Runner
from fedweave.training.batches import batch_schedule


def _config(model: str, nodes: int, batch: int, backend: str, algorithm: str):
    have, _ = dataset_status("fashion-mnist", None)
    data = (["data.dataset=fashion-mnist", f"data.train_samples={max(12000, nodes * batch * 2)}"]
            if have else ["data.dataset=synthetic", "data.synthetic.dim=784",
                          "data.synthetic.iid=true", "data.synthetic.samples_sigma=0",
                          f"data.synthetic.samples_mean={float(torch.log(torch.tensor(80.)))}"])
    return load_config(None, [*data, f"data.nodes={nodes}", "data.partition=iid",
                              f"model.name={model}", f"train.batch_size={batch}",
                              f"engine.name={backend}", f"algorithm.name={algorithm}",
                              "topology.name=ring", "output.plots=false"]), have


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_dsgd(model: str, nodes: int, batch: int, backend: str, repeats: int
              ) -> tuple[float, str]:
    cfg, _ = _config(model, nodes, batch, backend, "dsgd")
    algo = Runner(cfg, None).algo
    everyone = torch.ones(nodes, dtype=torch.bool, device=algo.x.device)
    stats = {k: torch.zeros(nodes, dtype=algo.x.dtype, device=algo.x.device)
             for k in ("loss", "correct", "seen")}
    algo.bytes_up = algo.bytes_down = algo.exchanges_lost = 0
    algo.batches(0)
    step = [0]

    def one() -> None:
        algo._step([(everyone, 0, step[0] % algo.S)], 0.0, stats)
        step[0] += 1

    return _median_time(one, repeats), algo.ctx.engine.name


def time_centralized(model: str, nodes: int, batch: int, backend: str, repeats: int) -> float:
    cfg, _ = _config(model, nodes, batch, backend, "centralized")
    algo = Runner(cfg, None).algo  # centralized: one node holding the union
    ctx = algo.ctx
    big = nodes * batch
    zero = torch.zeros(1, dtype=torch.int64)
    bt = batch_schedule(ctx.data, zero, torch.tensor([2]), big, (0,))
    active = torch.ones(1, dtype=torch.bool, device=algo.x.device)
    opt = ctx.trainer.optimizer
    state = opt.init(algo.x)

    def one() -> None:
        out = ctx.engine.grads(algo.x, algo.buffers, bt.idx[:, 0], bt.weight[:, 0], active,
                               (0, 0), zero.to(algo.x.device))
        algo.x = opt.step(algo.x, out.grads, state, 0.01, active)

    return _median_time(one, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=["auto", "loop", "vectorized"])
    parser.add_argument("--nodes", default="8,32,128")
    parser.add_argument("--models", default="logistic,mlp")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    _, have = _config("logistic", 2, args.batch, args.backend, "dsgd")
    print(f"inputs: {'Fashion-MNIST' if have else 'random 784-d'}; batch {args.batch} per node; "
          f"backend {args.backend}; {torch.get_num_threads()} threads\n")
    print("| model | N | engine | D-SGD step ms | centralized step (N·B) ms | ratio |")
    print("|---|---|---|---|---|---|")
    for model in args.models.split(","):
        for n in (int(v) for v in args.nodes.split(",")):
            dec, engine = time_dsgd(model, n, args.batch, args.backend, args.repeats)
            cen = time_centralized(model, n, args.batch, args.backend, args.repeats)
            print(f"| {model} | {n} | {engine} | {dec * 1e3:.1f} | {cen * 1e3:.1f} | "
                  f"{dec / cen:.1f} |", flush=True)


if __name__ == "__main__":
    main()
