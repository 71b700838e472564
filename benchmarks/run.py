"""fedweave benchmark suite: every row measured in one invocation.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--json out.json] [--rows PATTERN]

Workloads (``--quick`` shrinks each one):

- cross-silo: FedAvg, 100 clients × 600 Fashion-MNIST samples (iid), 10 per round, 20 rounds,
  cnn width 1.03 (100,066 parameters), batch 32, 1 local epoch;
- cross-device-{mlp,logistic}: FedAvg, 1000 clients with U{20..60} samples each, 100 per round,
  20 rounds;
- dsgd-{32,128}: D-SGD on a ring of 32 / 128 nodes, MLP, 100 samples per node, 5 epochs.

Methods per workload: fedweave with ``engine.name`` loop / vectorized / auto, the plain
sequential PyTorch loop of ``baselines.py``, the centralized limit (one model, the same number
of SGD steps and samples; for D-SGD one step on an N-times larger batch per D-SGD step), and
Flower's simulation when ``flwr`` is installed. Each row runs in a fresh subprocess, so its
peak RSS (``ru_maxrss``) is its own. ``wall_s`` = model/engine set-up (calibration included) +
training; data loading from disk and the final evaluation are excluded for every method.
``startup`` times the default run (``python -m fedweave run``): process start to the end of
round 1, minus round 1.
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
METHODS = ("fedweave-loop", "fedweave-vectorized", "fedweave-auto", "plain-sequential",
           "centralized-limit", "flower")


def workloads(quick: bool, rounds: int | None = None) -> dict[str, dict[str, Any]]:
    """The workloads; ``rounds`` overrides every workload's rounds (epochs for D-SGD)."""
    ws = _workloads(quick)
    if rounds:
        for w in ws.values():
            w["rounds"] = rounds
    return ws


def _workloads(quick: bool) -> dict[str, dict[str, Any]]:
    if quick:
        return {
            "cross-silo": dict(kind="fed", nodes=10, train_samples=1200, cohort=3, rounds=2,
                               model="cnn", width=1.03, sizes=None),
            "cross-device-mlp": dict(kind="fed", nodes=100, cohort=20, rounds=2, model="mlp",
                                     sizes=(20, 60)),
            "cross-device-logistic": dict(kind="fed", nodes=60, cohort=10, rounds=2,
                                          model="logistic", sizes=(20, 60)),
            "dsgd-8": dict(kind="dec", nodes=8, per_node=64, rounds=1, model="mlp"),
        }
    return {
        "cross-silo": dict(kind="fed", nodes=100, train_samples=60000, cohort=10, rounds=20,
                           model="cnn", width=1.03, sizes=None),
        "cross-device-mlp": dict(kind="fed", nodes=1000, cohort=100, rounds=20, model="mlp",
                                 sizes=(20, 60)),
        "cross-device-logistic": dict(kind="fed", nodes=1000, cohort=100, rounds=20,
                                      model="logistic", sizes=(20, 60)),
        "dsgd-32": dict(kind="dec", nodes=32, per_node=100, rounds=5, model="mlp"),
        "dsgd-128": dict(kind="dec", nodes=128, per_node=100, rounds=5, model="mlp"),
    }


BATCH, LR, SEED = 32, 0.05, 0


# --------------------------------------------------------------------------- one row (child)
def _config(w: dict[str, Any], backend: str, device: str):  # type: ignore[no-untyped-def]
    from fedweave.plugins import load_config  # the built-in algorithms registered first

    sets = [f"seed={SEED}", f"rounds={w['rounds']}", "data.dataset=fashion-mnist",
            f"data.nodes={w['nodes']}", "data.partition=iid", "data.val_fraction=0",
            f"model.name={w['model']}", "model.norm=group", f"model.width={w.get('width', 1.0)}",
            f"train.batch_size={BATCH}", f"train.lr={LR}", "train.local_epochs=1",
            f"engine.name={backend}", f"engine.device={device}",
            "output.plots=false", "output.progress=false", "output.checkpoint_every=0",
            f"output.eval_every={w['rounds']}"]
    if w["kind"] == "fed":
        sets += ["algorithm.name=fedavg", f"algorithm.clients_per_round={w['cohort']}",
                 "algorithm.server_momentum=0"]
        if w.get("train_samples"):
            sets.append(f"data.train_samples={w['train_samples']}")
        else:
            sets.append(f"data.train_samples={w['nodes'] * 60}")
    else:
        sets += ["algorithm.name=dsgd", "topology.name=ring", "topology.mixing=metropolis",
                 f"data.train_samples={w['nodes'] * w['per_node']}", "data.test_samples=2000"]
    return load_config(None, sets)


def _data(w: dict[str, Any], backend: str, device: str):  # type: ignore[no-untyped-def]
    """The fedweave config and FederatedData of a workload (custom U{lo..hi} shard sizes for
    cross-device)."""
    import numpy as np
    import torch

    from fedweave.data.federated import build_federated_data

    cfg = _config(w, backend, device)
    data = build_federated_data(cfg.data, cfg.seed)
    if w.get("sizes"):
        lo, hi = w["sizes"]
        rng = np.random.default_rng(SEED)
        sizes = rng.integers(lo, hi + 1, size=w["nodes"])
        perm = torch.from_numpy(rng.permutation(len(data.y)))
        need = int(sizes.sum())
        if need > len(perm):  # more samples than the subset: reuse them (iid draws)
            perm = perm[torch.from_numpy(rng.integers(0, len(perm), need))]
        bounds = np.concatenate([[0], np.cumsum(sizes)])
        data.train_idx = [perm[a:b].clone() for a, b in itertools.pairwise(bounds)]
        data.val_idx = [t[:0] for t in data.train_idx]
    return cfg, data


def _fedweave(w: dict[str, Any], backend: str, device: str) -> dict[str, Any]:
    import torch

    from fedweave.runner import Runner, evaluate

    cfg, data = _data(w, backend, device)
    t0 = time.perf_counter()
    runner = Runner(cfg, None, data=data)
    setup = time.perf_counter() - t0
    algo = runner.algo
    round_s = []
    for r in range(cfg.rounds):
        t = time.perf_counter()
        res = algo.round(r)
        if runner.ctx.device.type == "cuda":
            torch.cuda.synchronize()
        round_s.append(time.perf_counter() - t)
    wall = time.perf_counter() - t0
    rows = evaluate(algo, res)
    acc = sum(r["test_acc"] for r in rows.values()) / len(rows)
    out = {"wall_s": wall, "setup_s": setup, "round_s": round_s, "test_acc": acc,
           "engine": runner.ctx.engine.name,
           "calibration": getattr(runner.ctx.engine, "calibration", None)}
    if w["kind"] == "dec":
        steps = int(algo.S) * cfg.rounds
        out["steps"] = steps
        out["step_s"] = sum(round_s) / steps
    return out


def _tensors(data, device: str):  # type: ignore[no-untyped-def]
    import torch

    dev = torch.device(device)
    x = data.features(data.x).to(dev)
    tx = data.features(data.test_x).to(dev)
    return x, data.y.to(dev), tx, data.test_y.to(dev)


def _model(cfg, data, device: str):  # type: ignore[no-untyped-def]
    import torch

    from fedweave.models import build_model
    from fedweave.rng import derive_seed

    torch.manual_seed(derive_seed(cfg.seed, "init"))
    return build_model(cfg.model, data.input_shape, data.num_classes).to(device)


def _fed_steps(cfg, data) -> tuple[list[list[int]], int]:  # type: ignore[no-untyped-def]
    """Cohorts per round (fedweave's sampler) and the total number of local SGD steps."""
    from fedweave.algorithms.federated.sampling import cohort_size, sample_cohort
    from fedweave.training.batches import local_steps

    n = data.nodes
    size = cohort_size(n, cfg.algorithm.clients_per_round, None)
    cohorts = [sample_cohort(cfg.seed, r, n, size).tolist() for r in range(cfg.rounds)]
    steps = local_steps(cfg.train, data.sizes)
    return cohorts, int(sum(int(steps[c].sum()) for c in cohorts))


def _plain(w: dict[str, Any], device: str) -> dict[str, Any]:
    import baselines  # type: ignore[import-not-found]
    import torch

    from fedweave.topology import build_graph, mixing_matrix

    cfg, data = _data(w, "loop", device)
    x, y, tx, ty = _tensors(data, device)
    shards = [i.to(device) for i in data.train_idx]
    t0 = time.perf_counter()
    if w["kind"] == "fed":
        cohorts, _ = _fed_steps(cfg, data)
        model = baselines.sequential_fedavg(_model(cfg, data, device), x, y, shards, cohorts,
                                            LR, BATCH, seed=SEED)
        wall = time.perf_counter() - t0
        return {"wall_s": wall, "test_acc": baselines.accuracy(model, tx, ty)}
    mix = torch.as_tensor(mixing_matrix(build_graph(cfg.topology, data.nodes, cfg.seed),
                                        cfg.topology.mixing))
    steps = _dec_steps(cfg, data)
    models = baselines.sequential_dsgd(lambda: _model(cfg, data, device), x, y, shards, mix,
                                       steps, LR, BATCH, seed=SEED)
    wall = time.perf_counter() - t0
    acc = sum(baselines.accuracy(m, tx, ty) for m in models) / len(models)
    return {"wall_s": wall, "test_acc": acc, "steps": steps, "step_s": wall / steps}


def _dec_steps(cfg, data) -> int:  # type: ignore[no-untyped-def]
    from fedweave.training.batches import local_steps

    return int(local_steps(cfg.train, data.sizes).max()) * cfg.rounds


def _limit(w: dict[str, Any], device: str) -> dict[str, Any]:
    import baselines  # type: ignore[import-not-found]
    import torch

    cfg, data = _data(w, "loop", device)
    x, y, tx, ty = _tensors(data, device)
    union = data.union_train().to(device)
    x, y = x[union], y[union]
    model = _model(cfg, data, device)
    t0 = time.perf_counter()
    if w["kind"] == "fed":
        _, steps = _fed_steps(cfg, data)
        batch = BATCH
    else:  # one centralized step on an N-times larger batch per D-SGD step
        steps, batch = _dec_steps(cfg, data), BATCH * data.nodes
    baselines.centralized(model, x, y, steps, LR, batch, seed=SEED)
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "test_acc": baselines.accuracy(model, tx, ty), "steps": steps,
           "batch": batch}
    if w["kind"] == "dec":
        out["step_s"] = wall / steps
    return out


def _startup(spawned: float) -> dict[str, Any]:
    """The default run (``fedweave run`` defaults): start-up to the end of round 1."""
    from fedweave.config import load_config
    from fedweave.records.rundir import RunDirectory
    from fedweave.runner import Runner

    tmp = tempfile.mkdtemp()
    cfg = load_config(None, [f"output.dir={tmp}"])
    first: dict[str, float] = {}
    runner = Runner(cfg, None)
    runner.run_dir = RunDirectory.create(cfg)
    inner = runner.algo.round

    def timed(r: int):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        out = inner(r)
        first.setdefault("round_s", time.perf_counter() - t)
        return out

    def progress(r: int, rounds: int, row: dict[str, float]) -> None:
        first.setdefault("done", time.time())

    runner.algo.round = timed  # type: ignore[method-assign]
    runner.progress = progress
    result = runner.run()
    return {"startup_s": first["done"] - spawned - first["round_s"],
            "round1_s": first["round_s"], "default_run_s": time.time() - spawned,
            "test_acc": result.summary["final"]["test_acc"], "engine": result.summary["engine"],
            "calibration": result.summary["engine_calibration"]}


def child(row: str, quick: bool, device: str, spawned: float, rounds: int | None,
          threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
    if row == "startup":
        out = _startup(spawned)
    else:
        name, method = row.split(":")
        w = workloads(quick, rounds)[name]
        if method.startswith("fedweave-"):
            out = _fedweave(w, method.split("-", 1)[1], device)
        elif method == "plain-sequential":
            out = _plain(w, device)
        elif method == "centralized-limit":
            out = _limit(w, device)
        else:
            raise SystemExit(f"unknown method {method}")
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        import torch

        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(out))


# --------------------------------------------------------------------------- driver
def run_row(row: str, quick: bool, device: str, rounds: int | None = None,
            threads: int | None = None) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", row, "--device", device]
    if quick:
        cmd.append("--quick")
    if rounds:
        cmd += ["--rounds", str(rounds)]
    if threads:
        cmd += ["--threads", str(threads)]
    spawned = time.time()
    cmd += ["--spawned", repr(spawned)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    process_s = time.time() - spawned
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out = json.loads(line[7:])
            out["process_s"] = process_s
            return out
    return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]}


def main() -> None:
    parser = argparse.ArgumentParser(description="fedweave benchmark suite")
    parser.add_argument("--quick", action="store_true", help="tiny workloads (smoke test)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rows", default="*", help="glob over 'workload:method' or 'startup'")
    parser.add_argument("--rounds", type=int, default=None,
                        help="override every workload's rounds (shorter runs; ratios per round)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per row")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.quick, args.device, args.spawned, args.rounds, args.threads)
        return
    flower = importlib.util.find_spec("flwr") is not None
    rows = [f"{w}:{m}" for w in workloads(args.quick, args.rounds) for m in METHODS]
    rows.append("startup")
    rows = [r for r in rows if fnmatch.fnmatch(r, args.rows)]
    results: dict[str, Any] = {}
    t_all = time.time()
    no_cuda = args.device == "cuda" and not _cuda_available()
    for row in rows:
        if no_cuda:
            results[row] = {"status": "not measured (no CUDA)"}
        elif row.endswith(":flower"):
            results[row] = ({"status": "not installed"} if not flower else
                            {"status": "installed; Flower rows are not implemented here"})
        else:
            results[row] = run_row(row, args.quick, args.device, args.rounds, args.threads)
        print(f"  {row:42s} {_short(results[row])}", file=sys.stderr, flush=True)
    _ratios(results)
    report = {"device": args.device, "quick": args.quick, "host": platform.node(),
              "cpus": os.cpu_count(), "python": platform.python_version(),
              "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
              "rounds_override": args.rounds, "threads": args.threads,
              "workloads": workloads(args.quick, args.rounds),
              "load_avg_start_end": [os.getloadavg()], "suite_s": time.time() - t_all,
              "rows": results}
    report["load_avg_start_end"].append(os.getloadavg())
    import torch

    report["torch"] = torch.__version__
    out = args.json or HERE / "results" / f"{args.device}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(table(results))
    print(f"\nwritten {out}")


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _short(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"ERROR {r['error']}"
    if "status" in r:
        return r["status"]
    return f"{r.get('wall_s', r.get('startup_s', 0)):.2f} s"


def _ratios(results: dict[str, Any]) -> None:
    for row, r in results.items():
        if ":" not in row or "wall_s" not in r:
            continue
        lim = results.get(row.split(":")[0] + ":centralized-limit", {}).get("wall_s")
        plain = results.get(row.split(":")[0] + ":plain-sequential", {}).get("wall_s")
        if lim:
            r["vs_limit"] = r["wall_s"] / lim
        if plain:
            r["speedup_vs_plain"] = plain / r["wall_s"]


def table(results: dict[str, Any]) -> str:
    head = (f"{'workload':22s} {'method':20s} {'wall s':>8s} {'×limit':>7s} {'×plain':>7s} "
            f"{'peak MB':>8s} {'acc':>6s}  note")
    lines = [head, "-" * len(head)]
    for row, r in results.items():
        if row == "startup":
            continue
        w, m = row.split(":")
        if "status" in r or "error" in r:
            lines.append(f"{w:22s} {m:20s} {r.get('status') or 'ERROR ' + str(r['error'])}")
            continue
        note = ""
        if r.get("engine"):
            note = f"engine={r['engine']}"
        if r.get("step_s"):
            note += f" step={r['step_s'] * 1e3:.1f}ms"
        lines.append(f"{w:22s} {m:20s} {r['wall_s']:8.2f} {r.get('vs_limit', 0):7.2f} "
                     f"{r.get('speedup_vs_plain', 0):7.2f} {r['peak_rss_mb']:8.0f} "
                     f"{r['test_acc']:6.3f}  {note}")
    s = results.get("startup")
    if s and "startup_s" in s:
        lines.append(f"\nstart-up to first round (default run): {s['startup_s']:.2f} s "
                     f"(round 1 {s['round1_s']:.2f} s; whole default run {s['default_run_s']:.1f}"
                     f" s, engine {s['engine']}, test acc {s['test_acc']:.3f})")
    elif s:
        lines.append(f"\nstart-up: {s}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
