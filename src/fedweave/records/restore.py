"""Records of a resumed run: cut back to its checkpoint, and rebuilt from the checkpoint when
they were damaged.

A resume first drops the rows of rounds after the checkpoint (``RunDirectory.truncate``; an
unreadable file keeps its header only). A record file that then lacks rounds the checkpoint
has seen (emptied, binary, cut short) is rebuilt from what the checkpoint carries: its
``history`` (the summary row of every evaluated round: the model's train/val/test loss and
accuracy, the algorithm's statistics, the spread over clients) and its ``round_log`` (every
round's traffic, learning rate and virtual duration). ``metrics.csv`` and the table of a
single evaluated model (``nodes/global.csv``) come back whole; rows the checkpoint does not
carry (one model's rows among several, per-client rows) cannot, and one warning line says so.
Every record the runner writes is listed here, so a change of record files changes this one
place.
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

from fedweave.records.rundir import METRIC_COLUMNS, NODE_COLUMNS, RunDirectory

log = logging.getLogger("fedweave")

MODEL_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
_NOT_EXTRAS = {*MODEL_KEYS, "test_acc_min", "test_acc_max", "round", "sim_time", "wall_time"}
ROUND_METRICS = ("bytes_up", "bytes_down", "lr", "sim_s")


def _rounds_in(path: Path) -> set[int]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))[1:]
    except (OSError, UnicodeDecodeError, csv.Error):
        return set()
    out = set()
    for row in rows:
        try:
            out.add(int(row[0]))
        except (ValueError, IndexError):
            continue
    return out


def _write(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    os.replace(tmp, path)


def metric_rows(history: list[dict[str, Any]], round_log: list[list[Any]], label: str
                ) -> list[list[Any]]:
    """metrics.csv's rows as the runner wrote them, from the checkpoint (the per-round rows,
    then each evaluated round's model, statistics and client-spread rows)."""
    evaluated = {int(h["round"]): h for h in history}
    per_round: dict[int, list[list[Any]]] = {}
    for r, *values, sim, wall in round_log:
        per_round.setdefault(int(r), []).extend(
            [int(r), "all", "round", m, v, sim, wall] for m, v in zip(ROUND_METRICS, values,
                                                                    strict=True))
    rows: list[list[Any]] = []
    for r in sorted(set(per_round) | set(evaluated)):
        rows.extend(per_round.get(r, []))
        h = evaluated.get(r)
        if h is None:
            continue
        sim, wall = h["sim_time"], h["wall_time"]
        for key in MODEL_KEYS:
            if key in h:
                split, metric = key.split("_", 1)
                rows.append([r, label, split, metric, h[key], sim, wall])
        rows.extend([r, "all", "stats", k, v, sim, wall] for k, v in h.items()
                    if k not in _NOT_EXTRAS and not k.startswith(("clients_val_",
                                                                  "personal_test_")))
        rows.extend([r, "clients", "val", k[len("clients_val_"):], v, sim, wall]
                    for k, v in h.items() if k.startswith("clients_val_"))
        rows.extend([r, "clients", "personal_test", k[len("personal_test_"):], v, sim, wall]
                    for k, v in h.items() if k.startswith("personal_test_"))
    return rows


def restore_records(run_dir: RunDirectory, done: int, history: list[dict[str, Any]],
                    round_log: list[list[Any]], labels: list[str]) -> list[str]:
    """Cut the records back to round ``done`` and rebuild the damaged ones from the
    checkpoint; returns the files rebuilt."""
    run_dir.truncate(done)
    expected = {int(h["round"]) for h in history} | {int(r[0]) for r in round_log}
    evaluated = {int(h["round"]) for h in history}
    single = len(labels) == 1 and not any("test_acc_min" in h for h in history)
    label = labels[0] if single else "mean"
    rebuilt, lost = [], []
    metrics = run_dir.path / "metrics.csv"
    if not expected <= _rounds_in(metrics):
        _write(metrics, METRIC_COLUMNS, metric_rows(history, round_log, label))
        rebuilt.append("metrics.csv")
        if not single:
            lost.append("metrics.csv (each model's rows)")
    if single:
        node = run_dir.nodes_dir / f"{label}.csv"
        if not evaluated <= _rounds_in(node):
            _write(node, NODE_COLUMNS, [[int(h["round"]), *(h.get(c, "") for c in NODE_COLUMNS[1:])]
                                        for h in history])
            rebuilt.append(f"nodes/{label}.csv")
    others = [p for p in run_dir.nodes_dir.glob("*.csv")
              if not (single and p.name == f"{label}.csv") and p.name != "densities.csv"]
    for path in [*others, run_dir.path / "clients.csv"]:
        if path.exists() and evaluated and not _rounds_in(path) & evaluated:
            lost.append(str(path.relative_to(run_dir.path)))
    if rebuilt:
        log.warning("records: rebuilt %s from the checkpoint of round %d (they were damaged)",
                    ", ".join(rebuilt), done)
    if lost:
        log.warning("records: %s lost the rows of rounds up to %d (damaged; the checkpoint "
                    "does not carry them); the resumed rounds are appended", ", ".join(lost),
                    done)
    return rebuilt
