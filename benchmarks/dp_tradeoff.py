"""ε vs accuracy of DP-FedAvg on real Fashion-MNIST (issue 16).

``configs/dp-fmnist-fedavg.yaml`` (100 clients, Poisson cohorts with q = 0.2, updates clipped
to C = 0.5) at three noise multipliers σ, and the same run without noise or clipping (ε = ∞).
Every round records the test accuracy of the global model and ε at δ = 1e-5 (RDP accountant of
Google's dp-accounting). Writes ``benchmarks/results/dp_tradeoff.json`` and
``benchmarks/results/dp_tradeoff.png`` (accuracy against ε, one curve per σ) and prints the
final (ε, accuracy) of each σ.

    python benchmarks/dp_tradeoff.py [--sigmas 0.5,1,2] [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from fedweave.data.federated import build_federated_data
from fedweave.plugins import load_config
from fedweave.runner import Runner

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs/dp-fmnist-fedavg.yaml"


def curve(sigma: float, rounds: int | None, data: object = None) -> dict[str, object]:
    over = [f"privacy.noise_multiplier={sigma}", *([f"rounds={rounds}"] if rounds else [])]
    if sigma == 0:
        over.append("privacy.clip=.inf")
    cfg = load_config(CONFIG, over)
    t0 = time.perf_counter()
    res = Runner(cfg, None, data=data).run()  # type: ignore[arg-type]
    eps = [h["epsilon"] for h in res.history]
    return {"sigma": sigma, "epsilon": [e if math.isfinite(e) else None for e in eps],
            "test_acc": [h["test_acc"] for h in res.history],
            "final_epsilon": res.summary["privacy"]["epsilon"],
            "final_test_acc": res.summary["final"]["test_acc"],
            "seconds": time.perf_counter() - t0}


def plot(curves: list[dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for c in curves:
        if c["sigma"] == 0:
            ax.axhline(c["final_test_acc"], color="grey", ls="--",  # type: ignore[arg-type]
                       label="no noise, no clipping (ε = ∞)")
            continue
        ax.plot(c["epsilon"], c["test_acc"], marker=".", label=f"σ = {c['sigma']}")  # type: ignore[arg-type]
    ax.set_xlabel("ε (δ = 1e-5, RDP)")
    ax.set_ylabel("test accuracy")
    ax.set_xscale("log")
    ax.set_title("DP-FedAvg, Fashion-MNIST, 100 clients, q = 0.2, C = 0.5")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sigmas", default="0.5,1,2")
    ap.add_argument("--rounds", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    args = ap.parse_args()
    cfg = load_config(CONFIG)
    data = build_federated_data(cfg.data, cfg.seed)
    curves = [curve(s, args.rounds, data) for s in [0.0, *map(float, args.sigmas.split(","))]]
    print("| σ | ε (δ = 1e-5) | test accuracy |\n|---|---|---|")
    for c in curves:
        eps = c["final_epsilon"]
        print(f"| {c['sigma']} | {'∞' if eps is None else f'{eps:.2f}'} | "
              f"{c['final_test_acc']:.3f} |")
    (args.out / "dp_tradeoff.json").write_text(json.dumps(curves, indent=2))
    plot(curves, args.out / "dp_tradeoff.png")


if __name__ == "__main__":
    main()
