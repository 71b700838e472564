"""Sweeps: the cartesian product of grid values, times seeds, each point one run directory
inside one sweep folder.

```
<sweep>/
  sweep.json        base config, grid, seeds, overrides and the points (label, dir)
  sweep.csv         one row per run: grid values, seed, status, final/best metrics, the
                    headline accuracy (headline_metric: test_acc, or clustered FedAvg's
                    per-client clients_val_acc_mean), time to
                    target (ttt_sim_s, ttt_round: the simulated seconds and the round or
                    server update of the first evaluation reaching output.target_acc; empty
                    when not reached), why it stopped, times
  <point>-seed<s>/  a run directory per point and seed (fixed names, so a re-run finds it)
  logs/<dir>.log    each point's output when it ran as a subprocess (--jobs > 1)
```

Every point's config is validated before the first run starts. Points whose run finished
are skipped on a re-run of the same sweep; a killed point resumes from its checkpoint. With
``jobs > 1`` the points run as that many ``fedweave run`` subprocesses (each locks its own run
directory; torch threads are split between them; they start with a safe module path and die
with the sweep, ``fedweave.distributed.spawn``), otherwise one after the other in this
process. The sweep holds a lock on its folder while it runs: a second sweep into the same
folder is refused. Seeds are ``seed + 0 .. seed + n-1`` of the base config.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import statistics
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedweave.config import Config
from fedweave.distributed.spawn import die_with_parent, fedweave_argv
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.records.lock import DirectoryLock
from fedweave.records.rundir import atomic_write, prepare_output, slug
from fedweave.training.threads import CORES_ENV, WAIT_ENV

CSV_COLUMNS = ["point", "seed", "status", "rounds_done", "final_test_acc", "final_test_loss",
               "final_personal_test_acc", "best_round", "best_val_acc", "best_test_acc",
               "headline_metric", "headline_acc", "target_acc", "ttt_sim_s",
               "ttt_round", "stop_reason", "wall_s", "sim_time_s", "bytes", "run_dir"]


def split_values(text: str) -> list[str]:
    """``0.1,0.5`` → ``["0.1", "0.5"]``; commas inside brackets stay (``[64,32],[16]``)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out]


def parse_grid(grid: Iterable[str]) -> dict[str, list[str]]:
    axes: dict[str, list[str]] = {}
    for item in grid:
        if "=" not in item:
            raise UserError(f"--grid {item!r}: expected dotted.key=v1,v2")
        key, values = item.split("=", 1)
        key = key.strip()
        vals = split_values(values)
        if not key or not all(vals):
            raise UserError(f"--grid {item!r}: empty key or value")
        if key in axes:
            raise UserError(f"--grid {key}: given twice; list all its values in one --grid")
        axes[key] = vals
    return axes


def short_names(keys: list[str]) -> dict[str, str]:
    """The last part of each dotted key, or more of it where that would be ambiguous."""
    out = {}
    for key in keys:
        parts = key.removesuffix("!").split(".")  # algorithm!= (a whole section) → algorithm
        if len(parts) > 1 and parts[-1] == "name":  # algorithm.name → algorithm
            parts = parts[:-1]
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[-n:])
            if sum(1 for k in keys if k.endswith(name)) == 1:
                break
        out[key] = name
    return out


@dataclass
class Point:
    """One run of the sweep."""

    label: str          # "lr=0.05 alpha=0.1"
    values: dict[str, str]
    seed: int | None
    overrides: list[str]
    dir: str
    config: Config

    def manifest(self) -> dict[str, Any]:
        return {"label": self.label, "values": self.values, "seed": self.seed,
                "overrides": self.overrides, "dir": self.dir}


@dataclass
class Outcome:
    point: Point
    status: str                     # finished | skipped | failed | interrupted
    summary: dict[str, Any] = field(default_factory=dict)
    message: str = ""


#: runs a sweep may have: each is validated up front and gets its own folder
MAX_POINTS = 10_000


def plan(config: Path, axes: dict[str, list[str]], seeds: int | None,
         overrides: list[str], imports: list[str]) -> list[Point]:
    """Every point, validated (the first invalid one is a ``UserError`` naming it)."""
    base = load_config(config, overrides, imports)
    if seeds is not None and "seed" in axes:
        raise UserError("give seeds either with --seeds N or with --grid seed=..., not both")
    count = math.prod(len(v) for v in axes.values()) * (seeds or 1)
    if count > MAX_POINTS:
        raise UserError(f"the sweep has {count:,} runs (grid × seeds), more than can finish "
                        f"(at most {MAX_POINTS:,}); fewer values or --seeds")
    names = short_names(list(axes))
    seed_list: list[int | None] = [base.seed + i for i in range(seeds)] if seeds else [None]
    points = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo, strict=True))
        label = " ".join(f"{names[k]}={v}" for k, v in values.items()) or "base"
        for seed in seed_list:
            over = [*overrides, *(f"{k}={v}" for k, v in values.items())]
            if seed is not None:
                over.append(f"seed={seed}")
            try:
                cfg = load_config(config, over, imports)
            except UserError as exc:
                raise UserError(f"sweep point {label}: {exc} (nothing was run)") from None
            stem = "_".join(f"{names[k]}-{v}" for k, v in values.items()) or "base"
            folder = slug(stem + (f"_seed{seed}" if seed is not None else ""))
            points.append(Point(label, values, seed, over, folder, cfg))
    dirs = [p.dir for p in points]
    if len(set(dirs)) != len(dirs):
        raise UserError("two sweep points map to the same folder name; use values that "
                        "differ in letters or digits")
    return points


def sweep_folder(config: Path, out: Path | None, overrides: list[str],
                 imports: list[str]) -> Path:
    if out is not None:
        return prepare_output(out)
    base = load_config(config, overrides, imports)
    return prepare_output(base.output.dir) / f"{slug(base.name)}-sweep"


def _manifest(config: Path, axes: dict[str, list[str]], points: list[Point],
              overrides: list[str]) -> dict[str, Any]:
    seeds = sorted({p.seed for p in points if p.seed is not None})
    return {"config": str(config), "grid": axes, "seeds": seeds, "set": overrides,
            "points": [p.manifest() for p in points]}


def open_sweep(folder: Path, manifest: dict[str, Any]) -> DirectoryLock:
    """Lock the folder for this sweep (refused while another sweep runs in it), then write
    sweep.json, or check that the folder holds this same sweep. The lock is held until it is
    released or the process ends."""
    lock = DirectoryLock(folder, "sweep folder").acquire()
    try:
        _check_manifest(folder, manifest)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    path = folder / "sweep.json"
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = None
        same = isinstance(old, dict) and all(old.get(k) == manifest[k]
                                            for k in ("grid", "seeds", "set"))
        if not same:
            raise UserError(f"{folder} holds another sweep (its grid, seeds or --set differ); "
                            "choose another --out")
    atomic_write(path, json.dumps(manifest, indent=2))


def _summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _finished(run_dir: Path, rounds: int) -> dict[str, Any] | None:
    s = _summary(run_dir)
    if s is None:
        return None
    return s if s.get("stopped_early") or int(s.get("rounds_done", 0)) >= rounds else None


def run_in_process(folder: Path, point: Point, source: Path, imports: Iterable[str] = ()
                   ) -> Outcome:
    from fedweave.interrupt import Interrupted, StopOnSignal
    from fedweave.runner import run

    where = folder / point.dir
    stop = [StopOnSignal()]  # Ctrl-C: this point stops after its round, with a checkpoint
    try:
        if (where / "config.yaml").is_file():
            res = run(resume=where, overrides=[f"rounds={point.config.rounds}"], callbacks=stop,
                      imports=imports)
        else:
            res = run(point.config, source=source, run_dir=where, callbacks=stop)
    except Interrupted:
        return Outcome(point, "interrupted", message="interrupted")
    except UserError as exc:
        if "already finished" in str(exc):
            return Outcome(point, "finished", _summary(where) or {})
        return Outcome(point, "failed", message=str(exc))
    except Exception as exc:
        return Outcome(point, "failed", message=f"{type(exc).__name__}: {exc}")
    return Outcome(point, "finished", res.summary)


def run_subprocess(folder: Path, point: Point, source: Path, imports: list[str],
                   threads: int) -> Outcome:
    where = folder / point.dir
    args = ["run"]
    if (where / "config.yaml").is_file():
        args += ["--resume", str(where), "--set", f"rounds={point.config.rounds}"]
    else:
        args += [str(source), "--dir", str(where)]
        for item in point.overrides:
            args += ["--set", item]
    for name in imports:
        args += ["--import", name]
    env = {**os.environ, CORES_ENV: str(threads)}  # the cores fedweave.training.threads splits
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault(WAIT_ENV, "PASSIVE")
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    with open(logs / f"{point.dir}.log", "w") as log:
        code = subprocess.run(fedweave_argv(*args), stdout=log, stderr=subprocess.STDOUT,
                              env=env, preexec_fn=die_with_parent(os.getpid())).returncode
    text = (logs / f"{point.dir}.log").read_text(errors="replace").strip().splitlines()
    last = text[-1] if text else ""
    if code == 0:
        return Outcome(point, "finished", _summary(where) or {})
    if code == 2 and "already finished" in last:
        return Outcome(point, "finished", _summary(where) or {})
    if code in (130, 143):
        return Outcome(point, "interrupted", message=last)
    return Outcome(point, "failed", message=f"exit {code}: {last} (logs/{point.dir}.log)")


def execute(folder: Path, points: list[Point], source: Path, imports: list[str], jobs: int,
            report: Callable[[Outcome, int, int], None]) -> list[Outcome]:
    """Run the points that are not finished (``jobs`` at a time); ``report(outcome, i, n)``
    after each. Returns the outcomes in point order."""
    outcomes: dict[str, Outcome] = {}
    todo = []
    for p in points:
        done = _finished(folder / p.dir, p.config.rounds)
        if done is not None:
            outcomes[p.dir] = Outcome(p, "skipped", done)
        else:
            todo.append(p)
    count = 0
    for o in outcomes.values():
        count += 1
        report(o, count, len(points))
    if jobs <= 1:
        for p in todo:
            o = run_in_process(folder, p, source, imports)
            outcomes[p.dir] = o
            count += 1
            report(o, count, len(points))
            if o.status == "interrupted":
                break
    else:
        threads = max(1, (os.cpu_count() or 1) // jobs)
        with ThreadPoolExecutor(jobs) as pool:
            running: dict[Future[Outcome], Point] = {
                pool.submit(run_subprocess, folder, p, source, imports, threads): p
                for p in todo}
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    p = running.pop(fut)
                    o = fut.result()
                    outcomes[p.dir] = o
                    count += 1
                    report(o, count, len(points))
    return [outcomes[p.dir] for p in points if p.dir in outcomes]


def csv_rows(outcomes: list[Outcome], keys: list[str]) -> list[dict[str, Any]]:
    rows = []
    for o in outcomes:
        s = o.summary
        final, best = s.get("final", {}), s.get("best", {})
        status = "finished" if o.status == "skipped" else o.status
        ttt = s.get("time_to_target") or {}
        head = s.get("headline") or {}
        row: dict[str, Any] = {"point": o.point.label, **{k: o.point.values[k] for k in keys},
                               "seed": o.point.seed if o.point.seed is not None else "",
                               "status": status, "rounds_done": s.get("rounds_done", ""),
                               "final_test_acc": final.get("test_acc", ""),
                               "final_test_loss": final.get("test_loss", ""),
                               "final_personal_test_acc": final.get("personal_test_acc", ""),
                               "best_round": best.get("round", ""),
                               "best_val_acc": best.get("val_acc", ""),
                               "best_test_acc": best.get("test_acc", ""),
                               "headline_metric": head.get("metric", ""),
                               "headline_acc": head.get("value", ""),
                               "target_acc": s.get("target_acc", ""),
                               "ttt_sim_s": ttt.get("sim_s", ""),
                               "ttt_round": ttt.get("update", ttt.get("round", "")),
                               "stop_reason": s.get("stop_reason", ""),
                               "wall_s": s.get("wall_s", ""),
                               "sim_time_s": s.get("sim_time_s", ""),
                               "bytes": (s.get("bytes_up", 0) + s.get("bytes_down", 0)
                                         if s else ""),
                               "run_dir": o.point.dir}
        rows.append(row)
    return rows


def write_csv(folder: Path, rows: list[dict[str, Any]], keys: list[str]) -> Path:
    path = folder / "sweep.csv"
    tmp = folder / ".sweep.csv.tmp"
    columns = ["point", *keys, *CSV_COLUMNS[1:]]
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return path


def mean_std(values: list[float]) -> tuple[float, float] | None:
    if not values:
        return None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def grouped(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per point: number of seeds finished and mean ± sample std of the metrics; time to
    target over the seeds that reached it (``reached``: how many did, of those with a
    target)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["point"], []).append(row)
    out = []
    for label, members in groups.items():
        ok = [m for m in members if m["status"] == "finished" and m["final_test_acc"] != ""]
        entry: dict[str, Any] = {"point": label, "runs": len(members), "finished": len(ok)}
        for key in ("final_test_acc", "final_personal_test_acc", "best_val_acc",
                    "best_test_acc", "wall_s", "ttt_sim_s", "ttt_round"):
            entry[key] = mean_std([float(m[key]) for m in ok if m[key] != ""])
        targeted = [m for m in ok if m["target_acc"] != ""]
        entry["reached"] = (sum(m["ttt_sim_s"] != "" for m in targeted), len(targeted))
        out.append(entry)
    return out
