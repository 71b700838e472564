"""Records of a resumed run: cut back to its checkpoint, and rebuilt from the checkpoint when
they were damaged.

A resume first drops the rows of rounds after the checkpoint (``RunDirectory.truncate``; an
unreadable file keeps its header only). A record file that then lacks rounds the checkpoint
has seen (emptied, binary, cut short) is rebuilt from what the checkpoint carries: its
``history`` (the summary row of every evaluated round: the model's train/val/test loss and
accuracy, the algorithm's statistics, the spread over clients) and its ``round_log`` (every
round's traffic, learning rate and virtual duration). ``metrics.csv`` and the table of a
single evaluated model (``nodes/global.csv``) come back whole, and so does ``clients.csv``:
its rows up to the checkpoint travel in the checkpoint as one float64 tensor
(``records/clients``, ``ClientRows``; an empty cell is −inf, which no loss or
accuracy can be, and which compares equal to itself, unlike NaN), which is 8 bytes per cell, i.e.
it grows with the rows written, like the file. Rows the checkpoint does not carry (one model's
rows among several) cannot come back, and one warning line says so.
Every record the runner writes is listed here, so a change of record files changes this one
place.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from fedweave.records.rundir import CLIENT_COLUMNS, METRIC_COLUMNS, NODE_COLUMNS, RunDirectory

log = logging.getLogger("fedweave")

MODEL_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
_NOT_EXTRAS = {*MODEL_KEYS, "test_acc_min", "test_acc_max", "round", "sim_time", "wall_time"}
ROUND_METRICS = ("bytes_up", "bytes_down", "lr", "sim_s")
#: the checkpoint tensor that carries clients.csv's rows, and its empty cell
CLIENT_ROWS_KEY = "records/clients"
EMPTY = -math.inf


class ClientRows:
    """clients.csv's rows kept for the checkpoint: a ``[rows, len(CLIENT_COLUMNS)]`` float64
    buffer grown by doubling (an empty cell is ``EMPTY``). Values are Python floats (doubles) and
    integers below 2**53, so the file rebuilt from it has the very same text."""

    def __init__(self, table: torch.Tensor | None = None) -> None:
        width = len(CLIENT_COLUMNS)
        self.buf = table.to(torch.float64).clone() if table is not None and \
            table.dim() == 2 and table.shape[1] == width else torch.empty((0, width),
                                                                          dtype=torch.float64)
        self.count = len(self.buf)

    def append(self, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        new = torch.tensor([[EMPTY if v == "" else float(v) for v in row] for row in rows],
                           dtype=torch.float64)
        need = self.count + len(new)
        if need > len(self.buf):
            grown = torch.empty((max(need, 2 * len(self.buf), 64), self.buf.shape[1]),
                                dtype=torch.float64)
            grown[:self.count] = self.buf[:self.count]
            self.buf = grown
        self.buf[self.count:need] = new
        self.count = need

    def upto(self, done: int) -> ClientRows:
        """The rows of rounds up to ``done`` (a checkpoint's view of the file)."""
        table = self.buf[:self.count]
        return ClientRows(table[table[:, 0] <= done])

    def tensor(self) -> torch.Tensor:
        return self.buf[:self.count]

    def rounds(self) -> set[int]:
        return {int(r) for r in self.buf[:self.count, 0].unique().tolist()}

    def rows(self) -> list[list[Any]]:
        """The rows as clients.csv holds them (round and client as integers)."""
        return [[int(row[0]), int(row[1]), *("" if v == EMPTY else v for v in row[2:])]
                for row in self.buf[:self.count].tolist()]


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
                    round_log: list[list[Any]], labels: list[str],
                    clients: ClientRows | None = None) -> list[str]:
    """Cut the records back to round ``done`` and rebuild the damaged ones from the
    checkpoint (``clients``: clients.csv's rows it carries); returns the files rebuilt."""
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
    client_file = run_dir.path / "clients.csv"
    carried = clients is not None and clients.count > 0
    if carried and not clients.rounds() <= _rounds_in(client_file):  # type: ignore[union-attr]
        _write(client_file, CLIENT_COLUMNS, clients.rows())  # type: ignore[union-attr]
        rebuilt.append("clients.csv")
    others = [p for p in run_dir.nodes_dir.glob("*.csv")
              if not (single and p.name == f"{label}.csv") and p.name != "densities.csv"]
    for path in [*others, *([] if carried else [client_file])]:
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
