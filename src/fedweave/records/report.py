"""``fedweave report``: one self-contained HTML page (``index.html``, figures inlined as
base64 PNG, no network, no external file) of one or more runs, built from a Jinja2 template
(``templates/report.html.j2``), plus every figure as PNG, SVG and PDF in ``figures/``.

Inputs are run directories, sweep folders (``sweep.json``: their runs are grouped by grid
point, with mean ± std over seeds) or folders holding run directories. The page shows a table
of the runs with the config keys that differ between them, final and best-by-validation
accuracy, bytes, simulated and wall time, time to target (when the run recorded it); curves
of train / validation / test against rounds, simulated time and bytes; the spread over nodes
or clients; the final per-node accuracy; each partition's heatmap and each topology. A run
that was killed shows what it recorded (its status says where it stopped); a missing value is
shown as "–", never as nan.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fedweave.errors import UserError
from fedweave.records import plots
from fedweave.records.plots import Series
from fedweave.version import __version__

#: keys that name or place a run rather than define it (never a "difference")
NOT_A_DIFFERENCE = ("name", "output.dir", "output.progress", "output.plots",
                    "output.tensorboard", "output.mlflow", "notify.")


@dataclass
class RunRecord:
    """What a run directory holds, read without the data or the model."""

    path: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    series: Series
    partition: dict[str, Any] | None = None
    topology: dict[str, Any] | None = None
    node_final: dict[str, float] = field(default_factory=dict)
    group: str | None = None
    #: the name shown for a stage of a pipeline (``<pipeline>/<stage>``)
    alias: str | None = None

    @property
    def name(self) -> str:
        return self.alias or self.path.name

    @property
    def rounds(self) -> int:
        return int(self.config.get("rounds", 0) or 0)

    def done(self) -> int:
        if self.summary is not None:
            return int(self.summary.get("rounds_done", self.summary.get("rounds", 0)))
        node = self.series.summary_node()
        pts = self.series.curves.get((node or "", "test", "acc"), [])
        evaluated = pts[-1][0] if pts else 0
        return max([evaluated, *self.series.bytes_by_round])

    @property
    def status(self) -> str:
        if self.summary is not None:
            return "stopped early" if self.summary.get("stopped_early") else "finished"
        return f"unfinished: round {self.done()} of {self.rounds}"

    def final(self) -> dict[str, Any]:
        if self.summary is not None:
            return dict(self.summary.get("final", {}))
        row: dict[str, Any] = {}
        node = self.series.summary_node()
        for split in plots.SPLITS:
            for metric in ("acc", "loss"):
                pts = self.series.line(split, metric, node)
                if pts:
                    row[f"{split}_{metric}"] = pts[-1][1]
                    row["round"] = pts[-1][0]
                    row["sim_time"] = pts[-1][2]
        return row

    def best(self) -> dict[str, Any]:
        if self.summary is not None:
            return dict(self.summary.get("best", {}))
        val = self.series.line("val", "acc")
        if not val:
            return {}
        rnd, acc, _ = max(val, key=lambda p: (p[1], -p[0]))
        test = {p[0]: p[1] for p in self.series.line("test", "acc")}
        return {"round": rnd, "val_acc": acc, "test_acc": test.get(rnd),
                "selected_by": "val_acc"}

    def wall(self) -> float | None:
        """Wall seconds of a finished run (None for an unfinished one)."""
        return float(self.summary["wall_s"]) if self.summary and "wall_s" in self.summary \
            else None

    def bytes(self) -> float | None:
        """Bytes sent up and down, from summary.json or the per-round rows."""
        if self.summary is not None and "bytes_up" in self.summary:
            return float(self.summary["bytes_up"]) + float(self.summary.get("bytes_down", 0))
        return self.series.bytes_by_round.get(max(self.series.bytes_by_round, default=0))

    def sim_time(self) -> float | None:
        if self.summary is not None:
            return float(self.summary.get("sim_time_s", 0.0))
        return self.final().get("sim_time")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): node}


def _client_finals(path: Path) -> dict[str, float]:
    """The last validation accuracy of each federated client that was evaluated (clients.csv,
    one streaming pass)."""
    out: dict[str, float] = {}
    try:
        with open(path / "clients.csv", newline="") as f:
            for row in csv.DictReader(f):
                value = row.get("val_acc")
                if value:
                    out[str(row["client"])] = float(value)
    except (OSError, ValueError, KeyError, TypeError, csv.Error):
        return out
    return out


def _number(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _check_summary(file: Path, summary: dict[str, Any]) -> None:
    """The numbers a report reads from summary.json are numbers (a garbled file is one line
    naming it, not a traceback while the page is drawn)."""
    bad: list[str] = [k for k in ("rounds_done", "rounds", "wall_s", "bytes_up", "bytes_down",
                       "sim_time_s") if k in summary
           and (summary[k] is None or not _number(summary[k]))]
    for section in ("final", "best"):
        part = summary.get(section, {})
        if not isinstance(part, dict):
            bad.append(section)
        else:
            bad += [f"{section}.{k}" for k, v in part.items()
                    if k != "selected_by" and not _number(v)]
    if bad:
        raise UserError(f"{file}: damaged ({bad[0]} is not a number); restore it, or delete "
                        "it to report the run from metrics.csv")


def load_run(path: Path) -> RunRecord:
    """Read a run directory's records; ``UserError`` when it is not one."""
    if not (path / "config.yaml").is_file() or not (path / "metrics.csv").is_file():
        raise UserError(f"{path}: not a run directory (no config.yaml and metrics.csv; did "
                        "the run start?)")
    file = path / "config.yaml"
    try:
        config = _flatten(yaml.safe_load(file.read_text()) or {})
        file = path / "metrics.csv"
        with open(file, newline="") as f:
            series = plots.series(csv.DictReader(f))
    except (OSError, yaml.YAMLError, csv.Error, UnicodeDecodeError, ValueError, KeyError,
            TypeError, AttributeError, RecursionError) as exc:
        reason = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise UserError(f"{file}: damaged, cannot be read ({reason}); restore it, or leave "
                        "this run out of the report") from None
    summary = _read_json(path / "summary.json")
    if isinstance(summary, dict):
        _check_summary(path / "summary.json", summary)
    record = RunRecord(path, config, summary if isinstance(summary, dict) else None, series,
                       _read_json(path / "partition.json"), _read_json(path / "topology.json"))
    nodes = series.model_nodes()
    if len(nodes) > 1:
        for node in nodes:
            pts = series.curves.get((node, "test", "acc"))
            if pts:
                record.node_final[node] = pts[-1][1]
    else:
        record.node_final = _client_finals(path)
    return record


def pipeline_stages(path: Path) -> list[RunRecord]:
    """The stages with records of a ``fedweave prune`` or ``distill`` directory (its
    ``pipeline.json``), in stage order, named ``<directory>/<stage>``."""
    state = _read_json(path / "pipeline.json")
    order = list(state.get("stages", {})) if isinstance(state, dict) and isinstance(
        state.get("stages"), dict) else []
    found = sorted((p for p in path.iterdir() if (p / "metrics.csv").is_file()),
                   key=lambda p: (order.index(p.name) if p.name in order else len(order),
                                  p.name))
    if not found:
        kind = state.get("kind", "pipeline") if isinstance(state, dict) else "pipeline"
        raise UserError(f"{path}: a {kind} directory with no stage that has records yet; "
                        "report it once a training stage has run")
    out = []
    for stage in found:
        record = load_run(stage)
        record.alias = f"{path.name}/{stage.name}"
        out.append(record)
    return out


def collect(paths: Iterable[Path]) -> tuple[list[RunRecord], list[dict[str, Any]]]:
    """The runs named by ``paths`` (run dirs, sweep folders, folders of runs, ``fedweave
    prune`` / ``distill`` directories: their stages) and the sweeps among them (their
    ``sweep.json``)."""
    runs: list[RunRecord] = []
    sweeps: list[dict[str, Any]] = []
    for path in paths:
        path = Path(path)
        sweep = _read_json(path / "sweep.json") if (path / "sweep.json").is_file() else None
        if isinstance(sweep, dict) and isinstance(sweep.get("points"), list):
            sweep = {**sweep, "path": str(path)}
            sweeps.append(sweep)
            for point in sweep["points"]:
                run_path = path / str(point.get("dir", ""))
                if (run_path / "metrics.csv").is_file():
                    record = load_run(run_path)
                    record.group = str(point.get("label"))
                    runs.append(record)
            continue
        if (path / "pipeline.json").is_file():
            runs += pipeline_stages(path)
            continue
        if (path / "config.yaml").is_file():
            runs.append(load_run(path))
            continue
        inner = sorted(p for p in path.iterdir() if (p / "metrics.csv").is_file()) \
            if path.is_dir() else []
        if not inner:
            raise UserError(f"{path}: not a run directory, a sweep folder or a folder of runs")
        runs += [load_run(p) for p in inner]
    if not runs:
        raise UserError("no run with records among the given folders")
    return runs, sweeps


# ---------------------------------------------------------------------------- tables


def fmt(value: Any, spec: str = ".4f") -> str:
    """A number for the page; missing, NaN or infinite values are "–"."""
    if value is None or isinstance(value, bool):
        return "–" if value is None else str(value).lower()
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return "–"
        return format(value, spec)
    return str(value)


def human_bytes(n: float | None) -> str:
    if n is None or not math.isfinite(n):
        return "–"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return "–"


def differing_keys(runs: list[RunRecord]) -> list[str]:
    """Config keys that every run has and whose values differ between the runs (keys of one
    algorithm only, and naming/output keys, left out)."""
    if len(runs) < 2:
        return []
    keys = sorted(set.intersection(*(set(r.config) for r in runs)))
    out = []
    for key in keys:
        if key.startswith(NOT_A_DIFFERENCE) or key in NOT_A_DIFFERENCE:
            continue
        values = {json.dumps(r.config.get(key), sort_keys=True, default=str) for r in runs}
        if len(values) > 1:
            out.append(key)
    return out


def time_to_target(summary: dict[str, Any] | None, unit: str = "round") -> str:
    """"12.5 s, round 4": simulated seconds and the round (server update, epoch) at which the
    run first reached ``output.target_acc``; "not reached"; "–" without a target."""
    if not summary or "time_to_target" not in summary:
        return "–"
    ttt = summary["time_to_target"]
    if not isinstance(ttt, dict):
        return "not reached" if ttt is None else fmt(ttt, ".1f")
    parts = []
    if ttt.get("sim_s") is not None:
        parts.append(f"{fmt(ttt['sim_s'], '.1f')} s")
    for key in ("update", "round"):
        if ttt.get(key) is not None:
            parts.append(f"{unit} {ttt[key]}")
            break
    return ", ".join(parts) or "not reached"


def algorithm_kind(config: dict[str, Any]) -> str:
    """federated, decentralized, async or centralized (of the run's algorithm.name, from
    the registered algorithm configs: ``fedweave report`` registers the built-in algorithms
    first, never a plugin; an unknown name counts as federated)."""
    from fedweave.config.algorithm import ALGORITHM_CONFIGS

    name = str(config.get("algorithm.name"))
    cls = ALGORITHM_CONFIGS.classes.get(name)
    return str(getattr(cls, "kind", "federated"))


def round_unit(config: dict[str, Any]) -> str:
    """What one of the run's rounds is: "round", "epoch" (decentralized) or "server update"
    (asynchronous algorithms, where ``rounds`` counts server model updates)."""
    return plots.round_label([algorithm_kind(config)])


def run_rows(runs: list[RunRecord], keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    for r in runs:
        unit = round_unit(r.config)
        final, best = r.final(), r.best()
        best_text = "–"
        if best.get("round") is not None:
            by = "val" if best.get("selected_by", "val_acc") == "val_acc" else "test"
            best_text = (f"{fmt(best.get(f'{by}_acc'))} ({unit} {best['round']}; test "
                         f"{fmt(best.get('test_acc'))})")
        head = (r.summary or {}).get("headline") or {}
        acc, acc_label = final.get("test_acc"), ""
        if head.get("metric", "test_acc") != "test_acc" and head.get("value") is not None:
            acc = head["value"]  # e.g. clustered runs: each client's cluster model
            acc_label = f"{head.get('label', head['metric'])}; test {fmt(final.get('test_acc'))}"
        rows.append({
            "name": r.name, "group": r.group or "", "status": r.status, "acc_label": acc_label,
            "algorithm": r.config.get("algorithm.name", "–"),
            "dataset": r.config.get("data.dataset", "–"),
            "differing": [fmt(r.config.get(k), "") if not isinstance(r.config.get(k), float)
                     else f"{r.config[k]:g}" for k in keys],
            "rounds": f"{r.done()}/{r.rounds}" + ("" if unit == "round" else f" {unit}s"),
            "test_acc": fmt(acc),
            "spread": (f"{fmt(final['test_acc_min'])}–{fmt(final['test_acc_max'])}"
                       if "test_acc_min" in final else ""),
            "personal": (f"{fmt(final['personal_test_acc'])} (clients "
                         f"{fmt(final['personal_test_acc_min'])}–"
                         f"{fmt(final['personal_test_acc_max'])}, std "
                         f"{fmt(final['personal_test_acc_std'])})"
                         if "personal_test_acc" in final else ""),
            "best": best_text, "bytes": human_bytes(r.bytes()),
            "sim": fmt(r.sim_time(), ".1f"), "wall": fmt(r.wall(), ".1f"),
            "ttt": time_to_target(r.summary, unit),
            "test_acc_value": acc,
        })
    return rows


def _mean_std(values: list[float], spec: str = ".4f") -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    if len(vals) == 1:
        return fmt(vals[0], spec)
    return f"{statistics.fmean(vals):{spec}} ± {statistics.stdev(vals):{spec}}"


def group_rows(runs: list[RunRecord]) -> list[dict[str, Any]]:
    """Sweep points: mean ± std (sample std) over their seeds."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        if r.group is not None:
            groups.setdefault(r.group, []).append(r)
    rows = []
    for label, members in groups.items():
        finals = [m.final().get("test_acc") for m in members]
        personal = [m.final().get("personal_test_acc") for m in members]
        bests = [m.best().get("val_acc") for m in members]
        walls = [m.wall() for m in members]
        hits = [((m.summary or {}).get("time_to_target") or {}).get("sim_s") for m in members]
        targeted = sum("time_to_target" in (m.summary or {}) for m in members)
        reached = [float(v) for v in hits if v is not None]
        rows.append({"label": label, "n": len(members),
                     "ttt": (f"{_mean_std(reached, '.1f')} s ({len(reached)}/{targeted} "
                             "reached)" if reached else
                             (f"not reached (0/{targeted})" if targeted else "–")),
                     "finished": sum(m.summary is not None for m in members),
                     "test_acc": _mean_std([v for v in finals if v is not None]),
                     "personal": _mean_std([v for v in personal if v is not None]),
                     "best_val": _mean_std([v for v in bests if v is not None]),
                     "wall": _mean_std([v for v in walls if v is not None])})
    return rows


# ---------------------------------------------------------------------------- page


@dataclass
class Figure:
    id: str
    title: str
    uri: str
    caption: str = ""


def _figures(runs: list[RunRecord], out: Path, formats: tuple[str, ...]) -> list[Figure]:
    label = {r.name: (f"{r.group} · {r.name}" if r.group else r.name) for r in runs}
    grouped: dict[str, list[Series]] = {}
    for r in runs:  # sweep points: one curve per point (mean over its seeds)
        grouped.setdefault(r.group or r.name, []).append(r.series)
    data = {label[r.name]: r.series for r in runs}
    rounds = plots.round_label(algorithm_kind(r.config) for r in runs)
    figs: list[Figure] = []

    def add(fig: Any, ident: str, title: str, caption: str = "") -> None:
        if fig is None:
            return
        plots.save(fig, out / "figures" / ident, formats)
        figs.append(Figure(ident, title, plots.data_uri(fig), caption))
        plots.close(fig)

    add(plots.curve_figure(grouped, "acc", rounds=rounds), "accuracy-vs-round",
        f"Accuracy vs {rounds}",
        "train (dotted), validation (dashed), test (solid) accuracy of the evaluated model "
        "(decentralized: the mean over nodes); a sweep point is the mean over its seeds, "
        "its band the min–max")
    add(plots.curve_figure(grouped, "loss", rounds=rounds), "loss-vs-round",
        f"Loss vs {rounds}")
    add(plots.curve_figure(grouped, "acc", "sim", ("val", "test")), "accuracy-vs-simulated-time",
        "Accuracy vs simulated time", "virtual seconds on the run's clock (clock.*)")
    add(plots.curve_figure(grouped, "acc", "bytes", ("val", "test")), "accuracy-vs-bytes",
        "Accuracy vs communicated bytes", "cumulative model bytes sent up and down")
    add(plots.spread_figure(data, rounds), "spread", "Spread over nodes and clients")
    finals = {label[r.name]: list(r.node_final.values()) for r in runs if r.node_final}
    add(plots.distribution_figure(finals, "final accuracy (peers: test; clients: validation)"),
        "final-per-node", "Final accuracy per node / client")
    seen: set[str] = set()
    for r in runs:
        counts = (r.partition or {}).get("counts")
        if counts:
            key = json.dumps(counts)
            if key in seen:
                continue
            seen.add(key)
            title = (f"{r.config.get('data.dataset')}: {r.config.get('data.partition')} over "
                     f"{len(counts)} nodes")
            add(plots.partition_figure(counts, title), f"partition-{len(seen)}",
                f"Partition ({label[r.name]})")
    for r in runs:
        if r.topology and r.topology.get("edges") is not None:
            add(plots.topology_figure(r.topology, r.node_final or None,
                                      f"{label[r.name]}: {r.topology.get('topology')}"),
                f"topology-{r.name}", f"Topology ({label[r.name]})",
                "nodes coloured by final test accuracy")
    return figs


def write_report(run_dirs: list[Path], out: Path | None = None,
                 formats: tuple[str, ...] = ("png", "svg", "pdf")) -> Path:
    """Write ``<out>/index.html`` (and ``<out>/figures/``); returns the page's path. ``out``
    defaults to ``./report``: the run directories are only read (a shared or downloaded run
    is never written into unless ``out`` names a folder inside it)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    runs, sweeps = collect(run_dirs)
    if out is None:
        out = Path("report")
    out.mkdir(parents=True, exist_ok=True)
    keys = differing_keys(runs)
    env = Environment(loader=PackageLoader("fedweave.records", "templates"),
                      autoescape=select_autoescape(["html", "j2"]))
    page = env.get_template("report.html.j2").render(
        title="fedweave report", version=__version__,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"), runs=run_rows(runs, keys), keys=keys,
        groups=group_rows(runs), sweeps=sweeps, figures=_figures(runs, out, formats),
        details=[{"name": r.name, "config": (r.path / "config.yaml").read_text(),
                  "environment": json.dumps((r.summary or {}).get("environment", {}),
                                            indent=2)} for r in runs])
    path = out / "index.html"
    path.write_text(page)
    return path
