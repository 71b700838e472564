"""The run directory (DESIGN §5, a contract).

```
runs/<name>-<timestamp>/
  config.yaml  summary.json  metrics.csv  nodes/<node>.csv  checkpoints/  plots/
```
Every file is written atomically (temporary file + rename); checkpoints are a safetensors file
of tensors plus ``latest.json`` naming it, so a killed run always finds a consistent checkpoint.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from fedweave.config import Config, dump_config
from fedweave.errors import UserError

NODE_COLUMNS = ["epoch", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc",
                "test_acc"]
METRIC_COLUMNS = ["round", "node", "split", "metric", "value", "sim_time", "wall_time"]


def atomic_write(path: Path, data: str | bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


class RunDirectory:
    """Creates (or reopens, for ``--resume``) a run directory and writes its files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.nodes_dir = path / "nodes"
        self.ckpt_dir = path / "checkpoints"
        self.plots_dir = path / "plots"

    @classmethod
    def create(cls, config: Config) -> RunDirectory:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(config.output.dir) / f"{config.name}-{stamp}"
        path, i = base, 1
        while path.exists():
            path, i = base.with_name(f"{base.name}-{i}"), i + 1
        run = cls(path)
        for d in (run.nodes_dir, run.ckpt_dir, run.plots_dir):
            d.mkdir(parents=True, exist_ok=True)
        atomic_write(path / "config.yaml", dump_config(config))
        with open(path / "metrics.csv", "w", newline="") as f:
            csv.writer(f).writerow(METRIC_COLUMNS)
        return run

    @classmethod
    def open(cls, path: Path) -> RunDirectory:
        if not (path / "config.yaml").is_file():
            raise UserError(f"--resume {path}: not a run directory (no config.yaml)")
        return cls(path)

    # ------------------------------------------------------------------ metrics
    def append_metrics(self, rows: Iterable[tuple[Any, ...]]) -> None:
        with open(self.path / "metrics.csv", "a", newline="") as f:
            csv.writer(f).writerows(rows)

    def append_node_rows(self, rows: dict[str, dict[str, float]]) -> None:
        """One row per evaluated model in ``nodes/<label>.csv`` (seed 001's columns)."""
        for label, row in rows.items():
            path = self.nodes_dir / f"{label}.csv"
            new = not path.exists()
            with open(path, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(NODE_COLUMNS)
                w.writerow([row.get(c, "") for c in NODE_COLUMNS])

    def truncate(self, completed_rounds: int) -> None:
        """Drop rows of rounds after the checkpoint (a resumed run rewrites them)."""
        metrics = self.path / "metrics.csv"
        with open(metrics, newline="") as f:
            rows = list(csv.reader(f))
        keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= completed_rounds]
        with open(metrics.with_name(".metrics.tmp"), "w", newline="") as f:
            csv.writer(f).writerows(keep)
        os.replace(metrics.with_name(".metrics.tmp"), metrics)
        for path in self.nodes_dir.glob("*.csv"):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            keep = [rows[0]] + [r for r in rows[1:] if int(r[0]) <= completed_rounds]
            with open(path.with_name(f".{path.name}.tmp"), "w", newline="") as f:
                csv.writer(f).writerows(keep)
            os.replace(path.with_name(f".{path.name}.tmp"), path)

    def read_metrics(self) -> list[dict[str, str]]:
        with open(self.path / "metrics.csv", newline="") as f:
            return list(csv.DictReader(f))

    # ------------------------------------------------------------------ summary
    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.path / "summary.json", json.dumps(summary, indent=2))

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write(self.path / name, json.dumps(obj, indent=2))

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, round_done: int, tensors: dict[str, torch.Tensor],
                        meta: dict[str, Any]) -> None:
        """Write ``state-<round>.safetensors`` then point ``latest.json`` at it (atomic)."""
        name = f"state-{round_done:06d}.safetensors"
        tmp = self.ckpt_dir / f".{name}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, self.ckpt_dir / name)
        atomic_write(self.ckpt_dir / "latest.json",
                     json.dumps({"round": round_done, "file": name, **meta}, indent=2))
        for old in self.ckpt_dir.glob("state-*.safetensors"):
            if old.name != name:
                old.unlink()

    def load_checkpoint(self) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        latest = self.ckpt_dir / "latest.json"
        if not latest.is_file():
            return None
        meta = json.loads(latest.read_text())
        tensors = load_file(str(self.ckpt_dir / meta.pop("file")))
        return int(meta.pop("round")), tensors, meta
