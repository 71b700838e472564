"""Figures of influence scoring: score histograms per node, the two stages' curves."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from fedweave.influence.base import Scores
from fedweave.records.plots import series


def plot_histograms(scores: Scores, path: Path) -> Path:
    """One histogram of the finite scores per node (small multiples)."""
    nodes = sorted(set(scores.node.tolist()))
    cols = min(4, len(nodes))
    rows = math.ceil(len(nodes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, j in zip(axes.flat, nodes, strict=False):
        values = scores.of_node(j)
        finite = values[torch.isfinite(values)]
        ax.hist(finite.numpy(), bins=30, color="C0")
        extra = int((~torch.isfinite(values)).sum())
        ax.set_title(f"node {j}" + (f" ({extra} infinite)" if extra else ""), fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(nodes):]:
        ax.axis("off")
    fig.suptitle("scores (higher = more helpful)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_comparison(runs: dict[str, Path], path: Path) -> Path:
    """Test loss and accuracy (mean over models) of each run's metrics.csv, overlaid."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for i, (label, metrics) in enumerate(runs.items()):
        with open(metrics, newline="") as f:
            table = series(csv.DictReader(f)).curves
        for ax, metric in zip(axes, ("loss", "acc"), strict=True):
            for split, style in (("test", "-"), ("train", ":")):
                key = next((k for k in (("mean", split, metric), ("global", split, metric))
                            if k in table), None)
                if key is not None:
                    xs = [p[0] for p in table[key]]
                    ys = [p[1] for p in table[key]]
                    ax.plot(xs, ys, style, color=f"C{i}", label=f"{label} {split}")
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.set_xlabel("round")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
