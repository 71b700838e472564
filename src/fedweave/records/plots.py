"""Figures of runs, read from their records (``metrics.csv``, ``partition.json``,
``topology.json``): accuracy and loss of train / validation / test against rounds, simulated
time or communicated bytes; the spread over nodes or clients; the final per-node accuracy; the
partition heatmap; the topology. Every axis is labelled. matplotlib's Agg backend (no display);
figures are saved as PNG, SVG or PDF (``save``) or inlined as base64 PNG (``data_uri``).

Styles: one colour per run (or per split when there is one run), solid = test, dashed =
validation, dotted = train; a band is the min–max range over nodes, the line in it the mean.
"""

from __future__ import annotations

import base64
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

SPLITS = ("train", "val", "test")
STYLE = {"train": ":", "val": "--", "test": "-"}
SPLIT_NAME = {"train": "train", "val": "validation", "test": "test"}
METRIC_NAME = {"acc": "accuracy", "loss": "cross-entropy loss"}
SUMMARY_NODES = ("global", "mean")


@dataclass
class Series:
    """The records of one run as curves."""

    #: (node, split, metric) → [(round, value, sim_time)] of evaluated rounds
    curves: dict[tuple[str, str, str], list[tuple[int, float, float]]] = field(
        default_factory=lambda: defaultdict(list))
    #: cumulative bytes (up + down) after each round
    bytes_by_round: dict[int, float] = field(default_factory=dict)

    def summary_node(self) -> str | None:
        """The node whose rows summarize the run: ``mean`` over several models, else
        ``global``, else the only one."""
        nodes = {n for n, _, _ in self.curves}
        for name in ("mean", "global"):
            if name in nodes:
                return name
        models = sorted(self.model_nodes())
        return models[0] if len(models) == 1 else None

    def model_nodes(self) -> list[str]:
        """Labels of the evaluated models (peers, clusters, global), not summaries."""
        return sorted({n for n, s, _ in self.curves
                       if s in SPLITS and n not in ("mean", "all", "clients")},
                      key=lambda n: (not n.isdigit(), int(n) if n.isdigit() else 0, n))

    def line(self, split: str, metric: str, node: str | None = None
             ) -> list[tuple[int, float, float]]:
        node = node or self.summary_node()
        return self.curves.get((node, split, metric), []) if node else []


def series(rows: Iterable[dict[str, str]]) -> Series:
    """A run's curves from its metrics.csv rows (damaged rows are skipped)."""
    out = Series()
    traffic: dict[int, float] = defaultdict(float)
    for r in rows:
        try:
            rnd, value = int(r["round"]), float(r["value"])
            sim = float(r.get("sim_time") or "nan")
        except (KeyError, TypeError, ValueError):
            continue
        if r.get("split") == "round":
            if r.get("metric") in ("bytes_up", "bytes_down"):
                traffic[rnd] += value
            continue
        out.curves[(r.get("node", ""), r.get("split", ""), r.get("metric", ""))].append(
            (rnd, value, sim))
    total = 0.0
    for rnd in sorted(traffic):
        total += traffic[rnd]
        out.bytes_by_round[rnd] = total
    return out


# ---------------------------------------------------------------------------- output


def save(fig: Figure, stem: Path, formats: Sequence[str] = ("png",), tight: bool = True
         ) -> list[Path]:
    """Write ``fig`` as ``stem.<fmt>`` for each format (png at 110 dpi; svg, pdf vector).
    ``tight``: crop to the drawn extent (one more drawing pass); a figure already laid out
    by ``tight_layout`` does not need it."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
        paths.append(path)
    return paths


def data_uri(fig: Figure) -> str:
    """The figure as an inline ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def close(fig: Figure) -> None:
    plt.close(fig)


# ---------------------------------------------------------------------------- curves

XAXES = {"round": "round (decentralized: epoch)", "sim": "simulated time (s)",
         "bytes": "communicated bytes, up + down (MB)"}
#: what one of ``rounds`` is, per algorithm kind (``AlgorithmConfig.kind``)
ROUND_UNITS = {"async": "server update", "decentralized": "epoch"}


def round_label(kinds: Iterable[str]) -> str:
    """The x label of a round axis for runs of these algorithm kinds: "round", "server
    update" (asynchronous algorithms count server updates), "epoch", or several joined."""
    units = sorted({ROUND_UNITS.get(k, "round") for k in kinds}, key=lambda u: u != "round")
    return " / ".join(units) or "round"


def _integer_rounds(ax: Any) -> None:
    """Rounds are whole: ticks at integers only (never 1.25)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _x(points: list[tuple[int, float, float]], axis: str, s: Series) -> list[float]:
    if axis == "round":
        return [p[0] for p in points]
    if axis == "sim":
        return [p[2] for p in points]
    return [s.bytes_by_round.get(p[0], math.nan) / 1e6 for p in points]


def _mean_curve(members: list[Series], split: str, metric: str, x: str
                ) -> tuple[list[float], list[float], list[float], list[float]]:
    """(x, mean, min, max) over the members (seeds of one sweep point) at shared rounds."""
    per: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for s in members:
        pts = s.line(split, metric)
        for (rnd, value, _), xv in zip(pts, _x(pts, x, s), strict=True):
            per[rnd].append((xv, value))
    rounds = [r for r in sorted(per) if len(per[r]) == len(members)]
    xs = [sum(p[0] for p in per[r]) / len(per[r]) for r in rounds]
    ys = [[p[1] for p in per[r]] for r in rounds]
    return xs, [sum(v) / len(v) for v in ys], [min(v) for v in ys], [max(v) for v in ys]


def curve_figure(groups: dict[str, list[Series]], metric: str, x: str = "round",
                 splits: Sequence[str] = SPLITS, rounds: str | None = None) -> Figure | None:
    """``metric`` (acc or loss) of the summary model against ``x`` (round, sim, bytes): one
    colour per run (or per sweep point: the mean over its seeds, band = min–max), one line
    style per split, a marker on a curve of one evaluation; None when no run has such a
    curve. ``rounds`` labels a round axis (``round_label``)."""
    single = len(groups) == 1
    fig, ax = plt.subplots(figsize=(7.5, 4.2) if single else (10.0, 4.4))
    colors: dict[str, str] = {}
    styles: set[str] = set()
    for i, (name, members) in enumerate(groups.items()):
        for j, split in enumerate(splits):
            xs, mean, lo, hi = _mean_curve(members, split, metric, x)
            if not xs or all(math.isnan(v) for v in xs):
                continue
            color = f"C{j}" if single else f"C{i % 10}"
            ax.plot(xs, mean, STYLE[split], color=color, lw=1.8,
                    marker="o" if len(xs) == 1 else None, ms=6,  # one point: still seen
                    label=SPLIT_NAME[split] if single else None)
            if len(members) > 1:
                ax.fill_between(xs, lo, hi, color=color, alpha=0.12, lw=0)
            colors[name] = color
            styles.add(split)
    if not colors:
        plt.close(fig)
        return None
    xlabel = rounds if x == "round" and rounds else XAXES[x]
    ax.set_xlabel(xlabel)
    if x == "round":
        _integer_rounds(ax)
    ax.set_ylabel(METRIC_NAME[metric])
    what = "accuracy" if metric == "acc" else "loss"
    ax.set_title(f"{what} vs {xlabel.split(' (')[0]}")
    ax.grid(alpha=0.3)
    if single:
        ax.legend(fontsize=8)
    else:
        from matplotlib.lines import Line2D

        fig.subplots_adjust(left=0.08, right=0.64, top=0.92, bottom=0.13)
        fig.legend([Line2D([], [], color=c, lw=2) for c in colors.values()],
                   [n[:48] for n in colors], fontsize=7, loc="upper left",
                   bbox_to_anchor=(0.65, 0.92), title="run", title_fontsize=8)
        kept = [sp for sp in splits if sp in styles]
        fig.legend([Line2D([], [], color="0.3", ls=STYLE[sp]) for sp in kept],
                   [SPLIT_NAME[sp] for sp in kept], fontsize=7, loc="lower left",
                   bbox_to_anchor=(0.65, 0.13), title="split", title_fontsize=8)
        return fig
    # fixed margins fit this figure's size and labels; tight_layout would measure every text
    fig.subplots_adjust(left=0.1, right=0.97, top=0.92, bottom=0.13)
    return fig


def spread_figure(runs: dict[str, Series], rounds: str | None = None) -> Figure | None:
    """The spread over the evaluated models (decentralized peers: test accuracy) or over the
    clients (federated: the model's validation accuracy on each client): mean line, min–max
    band, one colour per run. None when no run has several models or clients."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    drawn = False
    for i, (name, s) in enumerate(runs.items()):
        color = f"C{i % 10}"
        nodes = s.model_nodes()
        if len(nodes) > 1:
            by_round: dict[int, list[float]] = defaultdict(list)
            for node in nodes:
                for rnd, v, _ in s.curves.get((node, "test", "acc"), []):
                    by_round[rnd].append(v)
            xs = sorted(by_round)
            lo = [min(by_round[r]) for r in xs]
            hi = [max(by_round[r]) for r in xs]
            mean = [sum(by_round[r]) / len(by_round[r]) for r in xs]
            what = f"{name}: test accuracy over {len(nodes)} nodes"
        elif ("clients", "val", "acc_mean") in s.curves:
            pts = {stat: {p[0]: p[1] for p in s.curves.get(("clients", "val", f"acc_{stat}"),
                                                               [])}
                   for stat in ("mean", "min", "max")}
            xs = sorted(pts["mean"])
            mean = [pts["mean"][r] for r in xs]
            lo = [pts["min"].get(r, math.nan) for r in xs]
            hi = [pts["max"].get(r, math.nan) for r in xs]
            what = f"{name}: validation accuracy over clients"
        else:
            continue
        ax.fill_between(xs, lo, hi, color=color, alpha=0.18, lw=0)
        ax.plot(xs, mean, color=color, lw=1.8, marker="o" if len(xs) == 1 else None,
                label=f"{what} (mean, band = min–max)")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel(rounds or XAXES["round"])
    _integer_rounds(ax)
    ax.set_ylabel("accuracy")
    ax.set_title("spread over nodes / clients")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def distribution_figure(values: dict[str, list[float]], ylabel: str) -> Figure | None:
    """Box plot (with the points) of per-node values, one box per run."""
    values = {k: [v for v in vs if math.isfinite(v)] for k, vs in values.items()}
    values = {k: v for k, v in values.items() if len(v) > 1}
    if not values:
        return None
    import textwrap

    fig, ax = plt.subplots(figsize=(max(4.5, 1.5 * len(values) + 2), 4.6))
    names = list(values)
    ax.boxplot([values[n] for n in names], showfliers=False)
    for i, n in enumerate(names, start=1):
        k = len(values[n])
        jitter = [i + 0.25 * ((j * 0.618) % 1 - 0.5) for j in range(k)]
        ax.scatter(jitter, values[n], s=8, alpha=0.6, color=f"C{(i - 1) % 10}")
    # long run names wrap over lines of 16 characters and lean, so that neighbours never
    # overlap (at most 4 lines; more is cut with "…")
    labels = []
    for n in names:
        lines = textwrap.wrap(n, 16, break_on_hyphens=False) or [n]
        labels.append("\n".join(lines[:3] + (["…"] if len(lines) > 3 else [])))
    ax.set_xticks(range(1, len(names) + 1), labels, rotation=30, ha="right",
                  rotation_mode="anchor", fontsize=7)
    ax.set_xlabel("run")
    ax.set_ylabel(ylabel)
    ax.set_title("final accuracy per node / client")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def plot_curves(runs: dict[str, list[dict[str, str]]], out_dir: Path,
                formats: Sequence[str] = ("png",), rounds: str | None = None) -> list[Path]:
    """accuracy.* and loss.* of one or more runs (train, validation and test in one axes)
    against rounds; accuracy_vs_time.* and accuracy_vs_bytes.* (validation and test against
    simulated seconds and bytes up + down) when the runs simulated time or sent bytes."""
    data = {name: [series(rows)] for name, rows in runs.items()}
    paths = []
    for metric, x, splits, stem in (("acc", "round", SPLITS, "accuracy"),
                                    ("loss", "round", SPLITS, "loss"),
                                    ("acc", "sim", ("val", "test"), "accuracy_vs_time"),
                                    ("acc", "bytes", ("val", "test"), "accuracy_vs_bytes")):
        if x != "round" and not any(_has_axis(s, x) for group in data.values() for s in group):
            continue
        fig = curve_figure(data, metric, x, splits, rounds)
        if fig is None:
            continue
        paths += save(fig, out_dir / stem, formats, tight=len(runs) > 1)  # one: laid out
        close(fig)
    return paths


def _has_axis(s: Series, x: str) -> bool:
    """The run has a simulated clock (``sim``) or traffic records (``bytes``) to plot against."""
    if x == "bytes":
        return any(v > 0 for v in s.bytes_by_round.values())
    return any(p[2] > 0 for pts in s.curves.values() for p in pts)


# ---------------------------------------------------------------------------- data, graph


def partition_figure(counts: torch.Tensor | Sequence[Sequence[int]],
                     title: str = "samples per node and class") -> Figure:
    """Heatmap of ``counts[nodes, classes]``."""
    c = torch.as_tensor(counts)
    nodes, classes = c.shape
    fig, ax = plt.subplots(figsize=(min(2 + 0.35 * classes, 14), min(1.5 + 0.25 * nodes, 12)))
    im = ax.imshow(c.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("class")
    ax.set_ylabel("node")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, label="training samples")
    fig.tight_layout()
    return fig


def plot_partition(counts: torch.Tensor, path: Path, title: str = "samples per node and class"
                   ) -> Path:
    """Heatmap of ``counts[nodes, classes]`` written to ``path``."""
    fig = partition_figure(counts, title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def topology_figure(info: dict[str, Any], node_values: dict[str, float] | None = None,
                    title: str = "") -> Figure:
    """The communication graph of ``topology.json`` (circular layout), nodes coloured by
    ``node_values`` (e.g. final test accuracy) when given."""
    import networkx as nx

    graph = nx.Graph()
    graph.add_nodes_from(range(int(info.get("nodes", 0))))
    graph.add_edges_from(tuple(e) for e in info.get("edges", []))
    pos = nx.circular_layout(graph)
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    colors: Any = "#8ecae6"
    if node_values:
        colors = [node_values.get(str(n), math.nan) for n in graph.nodes]
    drawn = nx.draw_networkx_nodes(graph, pos, ax=ax, node_color=colors, cmap="viridis",
                                   node_size=max(30, 300 - 2 * graph.number_of_nodes()))
    nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.5)
    if graph.number_of_nodes() <= 32:
        nx.draw_networkx_labels(graph, pos, ax=ax, font_size=7)
    if node_values:
        fig.colorbar(drawn, ax=ax, label="final test accuracy")
    gap = info.get("spectral_gap")
    ax.set_title(title or f"{info.get('topology', 'graph')}, {graph.number_of_nodes()} nodes"
                 + (f", spectral gap {gap:.3f}" if isinstance(gap, int | float) else ""),
                 fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    return fig
