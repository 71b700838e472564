"""The run directory (a contract).

```
runs/<name>-<timestamp>/
  config.yaml     the fully resolved config (re-runnable as is)
  summary.json    final and best (by validation) metrics, totals, environment (at the end)
  metrics.csv     long format: round,node,split,metric,value,sim_time,wall_time
  clients.csv     federated, long format, one append per round: round,client,train_loss,
                  train_acc,val_loss,val_acc of every cohort member and every client evaluated
                  (output.client_eval); its size grows with the cohort, never the population
  clusters.csv    clustered FedAvg: round,client,cluster of every client clustered in a round
                  (a client's cluster at round r is its last row at or before r)
  nodes/<id>.csv  per evaluated model: global, cluster<k>, decentralized peer i or its name
                  in a node_list.json (reference system 001's columns); ``fedweave export
                  --per-client`` splits clients.csv
  nodes/rank<r>.log  ranks run separately (--procs, torchrun): each rank's own log, like
                  reference system 001's node0.txt: the nodes it holds, then per evaluated
                  round a CSV row per held node with sim_time, wall_s and comm_wait_s
                  (``records.ranklog``)
  partition.json  samples per node and class, validation samples per node
  model.json      input shape, classes, parameters and labels of the evaluated models
  checkpoints/    verified safetensors + json, retention by output.keep
  plots/          curves, partition heatmap, topology (output.plots)
```
Whole files are written atomically (temporary file + rename); checkpoints are verified
safetensors + json (``records.checkpoints``). The folder is always one path component under
``output.dir`` (the run name is slugged), and a writer holds an exclusive lock on it
(``records.lock``), so two processes never write the same run directory.
"""

from __future__ import annotations

import csv
import json
import os
import re
import time
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fedweave.config import Config, dump_config
from fedweave.errors import UserError
from fedweave.records.checkpoints import Checkpoints
from fedweave.records.lock import LOCK_NAME, DirectoryLock

NAME_MAX = 80  # characters of the slugged run name (the timestamp is added to it)

NODE_COLUMNS = ["epoch", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc",
                "test_acc"]
METRIC_COLUMNS = ["round", "node", "split", "metric", "value", "sim_time", "wall_time"]
CLIENT_COLUMNS = ["round", "client", "train_loss", "train_acc", "val_loss", "val_acc"]


def slug(name: str) -> str:
    """A run name as one safe path component: ASCII letters, digits, ``.``, ``-`` and ``_``
    (anything else becomes ``-``), no leading dots, at most ``NAME_MAX`` characters."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return text[:NAME_MAX].strip("-.") or "run"


def first_difference(a: Any, b: Any, prefix: str = "") -> str:
    """The first dotted key (in sorted order) where two resolved configs (nested dicts)
    differ, e.g. ``train.lr``; ``config`` when they differ at the top."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                return first_difference(a.get(key), b.get(key), f"{prefix}{key}.")
    return prefix.rstrip(".") or "config"


def prepare_output(folder: Path) -> Path:
    """``output.dir`` ready to receive run directories, or a one-line ``UserError`` (checked
    before data and model are built)."""
    folder = Path(folder).expanduser()
    for parent in [folder, *folder.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"output.dir {folder}: {parent} is a file, not a folder; "
                                "choose another --out")
            break
    if str(folder.resolve()).startswith(("/proc", "/sys")):
        raise UserError(f"output.dir {folder}: not a place for run directories; choose another "
                        "--out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"output.dir {folder}: cannot create it ({exc.strerror}); choose "
                        "another --out") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output.dir {folder}: not writable; choose another --out")
    return folder


#: what a run directory holds before its config.yaml is written (a start killed at once)
_SCAFFOLD = ("nodes", "checkpoints", "plots")


def claim(folder: Path) -> DirectoryLock:
    """``--dir``: create ``folder`` and lock it before any work, so that of two starts on one
    folder the second is refused (naming the first one's pid). A folder that holds a run, or
    anything that is not a run directory's empty scaffold, is refused too: ``--dir`` never
    writes into someone's folder."""
    folder = Path(folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--dir {folder}: cannot create it ({exc.strerror}); choose another "
                        "folder") from None
    lock = DirectoryLock(folder).acquire()
    try:
        if (folder / "config.yaml").exists():
            raise UserError(f"{folder} already holds a run; continue it with --resume {folder} "
                            "or choose another directory")
        other = sorted(p.name for p in folder.iterdir() if p.name != LOCK_NAME and not (
            p.name in _SCAFFOLD and p.is_dir() and not any(p.iterdir())))
        if other:
            shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
            raise UserError(f"--dir {folder}: the folder is not empty and not a fedweave run "
                            f"directory (it holds {shown}); give a new or empty folder")
    except BaseException:
        lock.release()
        if created:
            release_claim(folder)
        raise
    return lock


def release_claim(folder: Path) -> None:
    """Remove a folder made by ``claim`` that never received a run (the start failed)."""
    try:
        (folder / LOCK_NAME).unlink(missing_ok=True)
        for name in _SCAFFOLD:
            if (folder / name).is_dir():
                (folder / name).rmdir()
        folder.rmdir()
    except OSError:
        pass


def check_structure(path: Path) -> None:
    """One line for a run directory whose skeleton is damaged (a file where a folder belongs,
    a folder where a file belongs), before anything is read or written."""
    for name in _SCAFFOLD:
        if (path / name).exists() and not (path / name).is_dir():
            raise UserError(f"run directory {path} is damaged: {name} is a file where a folder "
                            "belongs; restore the run directory from a copy or start a new run")
    for name in ("metrics.csv", "clients.csv", "summary.json", LOCK_NAME):
        if (path / name).is_dir():
            raise UserError(f"run directory {path} is damaged: {name} is a folder where a file "
                            "belongs; restore the run directory from a copy or start a new run")


def atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def new_run_folder(config: Config) -> Path:
    """Create and return a new ``<output.dir>/<slug(name)>-<timestamp>`` (``-1``, ``-2``, ...
    appended when that name is taken)."""
    parent = prepare_output(config.output.dir)
    base = parent / f"{slug(config.name)}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while True:
        try:
            path.mkdir()
            return path
        except FileExistsError:
            path, i = base.with_name(f"{base.name}-{i}"), i + 1


class RunDirectory:
    """Creates (or reopens, for ``--resume``) a run directory and writes its files."""

    def __init__(self, path: Path, keep: str = "latest", keep_every: int = 1) -> None:
        self.path = path
        self.nodes_dir = path / "nodes"
        self.ckpt_dir = path / "checkpoints"
        self.plots_dir = path / "plots"
        self.checkpoints = Checkpoints(self.ckpt_dir, keep, keep_every)
        self.lock = DirectoryLock(path)

    @classmethod
    def create(cls, config: Config, at: Path | None = None,
               lock: DirectoryLock | None = None) -> RunDirectory:
        """A new ``<output.dir>/<slug(name)>-<timestamp>`` (or the folder ``at``, e.g. a
        pipeline stage), locked for this process (``lock``: already locked by ``claim``),
        with config.yaml and metrics.csv."""
        if at is None:
            path = new_run_folder(config)
        else:
            path = at
            path.mkdir(parents=True, exist_ok=True)
        run = cls(path, config.output.keep, config.output.keep_every)
        if lock is not None:
            run.lock = lock
        else:
            check_structure(path)
            run.lock.acquire()
        for d in (run.nodes_dir, run.ckpt_dir, run.plots_dir):
            d.mkdir(parents=True, exist_ok=True)
        run.start(config)
        return run

    def start(self, config: Config) -> None:
        """(Re)start the records: config.yaml, empty metrics.csv and nodes/ (a run resumed
        before its first checkpoint starts over in place)."""
        atomic_write(self.path / "config.yaml", dump_config(config))
        atomic_write(self.path / "metrics.csv", ",".join(METRIC_COLUMNS) + "\n")
        (self.path / "clients.csv").unlink(missing_ok=True)
        (self.path / "clusters.csv").unlink(missing_ok=True)
        for old in self.nodes_dir.glob("*.csv"):
            old.unlink()

    @classmethod
    def open(cls, path: Path, lock: bool = True) -> RunDirectory:
        """An existing run directory (for ``--resume``: locked for this process)."""
        if not (path / "config.yaml").is_file():
            raise UserError(f"--resume {path}: not a run directory (no config.yaml)")
        check_structure(path)
        run = cls(path)
        if lock:
            run.lock.acquire()
        return run

    def configure(self, config: Config) -> None:
        """Adopt the run's checkpoint retention policy."""
        self.checkpoints.keep = config.output.keep
        self.checkpoints.keep_every = config.output.keep_every

    # ------------------------------------------------------------------ metrics
    def append_metrics(self, rows: Iterable[tuple[Any, ...]]) -> None:
        with open(self.path / "metrics.csv", "a", newline="") as f:
            csv.writer(f).writerows(rows)

    def append_node_rows(self, rows: dict[str, dict[str, Any]]) -> None:
        """One row per evaluated model in ``nodes/<label>.csv`` (reference system 001's columns)."""
        for label, row in rows.items():
            path = self.nodes_dir / f"{label}.csv"
            new = not path.exists()
            with open(path, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(NODE_COLUMNS)
                w.writerow([row.get(c, "") for c in NODE_COLUMNS])

    def append_clients(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Rows of ``clients.csv`` (CLIENT_COLUMNS): who trained in a round and how, and the
        validation of the clients evaluated (one append per round, one file per run)."""
        path = self.path / "clients.csv"
        new = not path.exists()
        with open(path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(CLIENT_COLUMNS)
            w.writerows(rows)

    def truncate(self, completed_rounds: int) -> None:
        """Drop rows of rounds after the checkpoint (a resumed run rewrites them). Damaged or
        emptied record files are rebuilt from what is left (a header at least)."""
        files = [(self.path / "metrics.csv", METRIC_COLUMNS),
                 *((p, NODE_COLUMNS) for p in self.nodes_dir.glob("*.csv"))]
        if (self.path / "clients.csv").exists():
            files.append((self.path / "clients.csv", CLIENT_COLUMNS))
        if (self.path / "clusters.csv").exists():
            files.append((self.path / "clusters.csv", ["round", "client", "cluster"]))
        for path, header in files:
            try:
                with open(path, newline="") as f:
                    rows = list(csv.reader(f))
            except (OSError, UnicodeDecodeError, csv.Error):
                rows = []
            if path.parent == self.nodes_dir and rows and rows[0] and rows[0][0] == "epoch":
                header = rows[0]  # a per-node table of its own columns (e.g. densities.csv)
            if path.name == "clients.csv" and rows and rows[0][:2] == ["round", "client"]:
                header = rows[0]  # an older run's columns
            keep = [header]
            for r in rows[1:]:
                try:
                    if len(r) == len(header) and int(r[0]) <= completed_rounds:
                        keep.append(r)
                except ValueError:
                    continue
            tmp = path.with_name(f".{path.name}.tmp")
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows(keep)
            os.replace(tmp, path)

    def read_metrics(self) -> list[dict[str, str]]:
        with open(self.path / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    # ------------------------------------------------------------------ summary
    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2))

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=2))
