"""Model zoo benchmark: parameters and CPU forward time per batch (2 threads).

    python benchmarks/models.py [--norm group|batch|none] [--batch 32] [--repeats 5]

Prints one row per model: name, input shape, classes, parameters, median forward ms per batch
(eval mode, no grad, after one warm-up call).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fedweave.config import ModelConfig
from fedweave.models import build_model, num_parameters

CASES: list[tuple[str, tuple[int, ...], int, dict[str, str]]] = [
    ("logistic", (1, 28, 28), 10, {}),
    ("mlp", (1, 28, 28), 10, {}),
    ("cnn", (1, 8, 8), 10, {}),
    ("cnn", (1, 28, 28), 10, {}),
    ("cnn", (3, 32, 32), 10, {}),
    ("lenet", (1, 28, 28), 10, {}),
    ("conv2", (1, 28, 28), 62, {}),
    ("vgg11", (3, 32, 32), 10, {}),
    ("resnet18", (3, 32, 32), 10, {}),
    ("resnet32", (3, 32, 32), 10, {}),
    ("resnet50", (3, 32, 32), 10, {}),
    ("resnet50", (3, 64, 64), 200, {"stem": "imagenet"}),
    ("squeezenet", (3, 32, 32), 10, {}),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--norm", default="group", choices=["batch", "group", "none"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    print(f"norm={args.norm}, batch={args.batch}, threads={torch.get_num_threads()}, "
          f"torch {torch.__version__}")
    print(f"{'model':<22} {'input':<12} {'classes':>7} {'params':>12} {'forward ms':>11}")
    for name, shape, classes, extra in CASES:
        model = build_model(ModelConfig(name=name, norm=args.norm, **extra), shape, classes).eval()
        x = torch.randn(args.batch, *shape)
        times = []
        with torch.no_grad():
            model(x)
            for _ in range(args.repeats):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        label = name + (f" ({extra['stem']})" if extra else "")
        print(f"{label:<22} {'×'.join(map(str, shape)):<12} {classes:>7} "
              f"{num_parameters(model):>12,} {1e3 * statistics.median(times):>11.2f}")


if __name__ == "__main__":
    main()
