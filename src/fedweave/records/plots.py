"""Plots of a run: accuracy and loss curves (one line per evaluated model, mean bold) and the
partition's label-distribution heatmap. Uses matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch


def curves(rows: list[dict[str, str]]) -> dict[tuple[str, str, str], tuple[list[int], list[float]]]:
    """(node, split, metric) → (rounds, values) from metrics.csv rows."""
    out: dict[tuple[str, str, str], tuple[list[int], list[float]]] = defaultdict(
        lambda: ([], []))
    for r in rows:
        xs, ys = out[(r["node"], r["split"], r["metric"])]
        xs.append(int(r["round"]))
        ys.append(float(r["value"]))
    return dict(out)


def plot_curves(runs: dict[str, list[dict[str, str]]], out_dir: Path) -> list[Path]:
    """accuracy.png and loss.png; several runs overlay (label = run name)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric, fname in (("acc", "accuracy.png"), ("loss", "loss.png")):
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, split in zip(axes, ("train", "test"), strict=True):
            for i, (name, rows) in enumerate(runs.items()):
                color = f"C{i}"
                for (node, sp, m), (xs, ys) in sorted(curves(rows).items()):
                    if sp != split or m != metric:
                        continue
                    summary = node in ("global", "mean")
                    ax.plot(xs, ys, color=color, lw=2 if summary else 0.6,
                            alpha=1 if summary else 0.35,
                            label=f"{name}" if summary else None)
            ax.set_title(f"{split} {metric}")
            ax.set_xlabel("round")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / fname
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_partition(counts: torch.Tensor, path: Path, title: str = "samples per node and class"
                   ) -> Path:
    """Heatmap of ``counts[nodes, classes]``."""
    nodes, classes = counts.shape
    fig, ax = plt.subplots(figsize=(min(2 + 0.35 * classes, 14), min(1.5 + 0.25 * nodes, 12)))
    im = ax.imshow(counts.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("class")
    ax.set_ylabel("node")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
