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
    return paths + plot_time_to_accuracy(runs, out_dir)


def accuracy_against(rows: list[dict[str, str]]) -> dict[str, list[tuple[float, float]]]:
    """The evaluated model's (or the mean's) test accuracy against simulated seconds
    (``time``) and against cumulative bytes up + down (``bytes``, from the stats rows
    ``bytes_up_total`` / ``bytes_down_total``), as sorted (x, accuracy) points."""
    acc: dict[int, float] = {}
    sim: dict[int, float] = {}
    traffic: dict[int, float] = defaultdict(float)
    for r in rows:
        rnd = int(r["round"])
        if r["split"] == "test" and r["metric"] == "acc" and r["node"] in ("global", "mean"):
            acc[rnd] = float(r["value"])
            sim[rnd] = float(r["sim_time"])
        elif r["split"] == "stats" and r["metric"] in ("bytes_up_total", "bytes_down_total"):
            traffic[rnd] += float(r["value"])
    return {"time": sorted((sim[k], a) for k, a in acc.items()),
            "bytes": sorted((traffic[k], a) for k, a in acc.items() if k in traffic)}


def plot_time_to_accuracy(runs: dict[str, list[dict[str, str]]], out_dir: Path) -> list[Path]:
    """accuracy_vs_time.png (test accuracy against simulated seconds) and
    accuracy_vs_bytes.png (against bytes up + down), several runs overlaid; drawn when some
    run has simulated time (resp. traffic records)."""
    series = {name: accuracy_against(rows) for name, rows in runs.items()}
    paths = []
    for key, xlabel, fname in (("time", "simulated seconds", "accuracy_vs_time.png"),
                               ("bytes", "bytes up + down", "accuracy_vs_bytes.png")):
        if not any(pts and pts[-1][0] > 0 for s in series.values() for pts in [s[key]]):
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for name, s in series.items():
            if s[key]:
                xs, ys = zip(*s[key], strict=True)
                ax.plot(xs, ys, lw=1.6, label=name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
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
