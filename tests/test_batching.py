"""A row's numbers never depend on how rows are batched: the batched engines compute fixed-width
chunks (``fedweave.training.chunks``), so a node's gradient is the same whichever other nodes
share its stack, on 1 or N processes, for every zoo model; the engines agree with the loop
engine to a per-family tolerance."""

from __future__ import annotations

import pytest
import torch

from fedweave.config import ModelConfig
from fedweave.core.population import ParamLayout, flat_params
from fedweave.data.federated import FederatedData
from fedweave.models import build_model
from fedweave.training.chunks import chunk_blocks, chunks, pad_rows
from fedweave.training.fused import FusedEngine
from fedweave.training.loop import LoopEngine
from fedweave.training.vectorized import VectorizedEngine

ZOO = {  # model: (config, input shape)
    "logistic": ({}, (1, 8, 8)), "mlp": ({"hidden": [16, 8]}, (1, 8, 8)),
    "cnn": ({}, (1, 12, 12)), "lenet": ({"width": 0.5}, (1, 28, 28)),
    "conv2": ({"width": 0.25}, (1, 12, 12)), "vgg11": ({"width": 0.125, "norm": "group",
                                                         "group_channels": 4}, (3, 32, 32)),
    "resnet18": ({"width": 0.125, "norm": "group", "group_channels": 4}, (3, 16, 16)),
    "resnet32": ({"width": 0.5, "norm": "group", "group_channels": 4}, (3, 16, 16)),
    "resnet50": ({"width": 0.0625, "norm": "group", "group_channels": 2}, (3, 16, 16)),
    "squeezenet": ({"width": 0.25, "norm": "group", "group_channels": 4}, (3, 32, 32)),
}


def _data(shape: tuple[int, ...], n: int = 10) -> FederatedData:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n * 6, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n * 6,), generator=g)
    shards = [torch.arange(i * 6, (i + 1) * 6) for i in range(n)]
    return FederatedData(x, y, x[:8], y[:8], 10, None, None, shards, shards)


def _rows(engine, params, data, active, rows):  # type: ignore[no-untyped-def]
    """Gradients of ``rows`` computed in a stack of just those rows."""
    sel = torch.tensor(rows)
    idx = torch.stack([data.train_idx[i][:4] for i in rows])
    w = torch.ones(len(rows), 4)
    return engine.grads(params[sel], {}, idx, w, active[sel], (0, 0), sel).grads


def test_chunks_and_blocks() -> None:
    assert chunks(10, 4) == [slice(0, 4), slice(4, 8), slice(8, 10)]
    assert chunk_blocks(10, 4, 2) == [list(range(8)), [8, 9]]
    assert chunk_blocks(10, 4, 3) == [list(range(4)), list(range(4, 8)), [8, 9]]
    assert chunk_blocks(3, 4, 2) == [[0, 1, 2], []]
    t = torch.arange(6.0).view(2, 3)
    assert pad_rows(t, 4).tolist() == [[0, 1, 2], [3, 4, 5], [0, 1, 2], [0, 1, 2]]
    assert pad_rows(t, 3, 0.0)[2].tolist() == [0, 0, 0]


def test_every_zoo_model_gives_each_row_the_same_bits_in_any_stack() -> None:
    torch.manual_seed(0)
    for name, (options, shape) in ZOO.items():
        model = build_model(ModelConfig(name=name, **options), shape, 10)
        layout = ParamLayout.of(model)
        data = _data(shape)
        params = flat_params(model).expand(10, -1).clone()
        params += 0.01 * torch.randn(params.shape, generator=torch.Generator().manual_seed(2))
        active = torch.ones(10, dtype=torch.bool)
        active[9] = False
        engines = [VectorizedEngine(model, layout, data, 0, chunk=4)]
        if name in ("logistic", "mlp"):
            engines.append(FusedEngine(model, layout, data, 0, chunk=4))
        for engine in engines:
            full = _rows(engine, params, data, active, list(range(10)))
            for part in ([0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [8], list(range(4, 10))):
                got = _rows(engine, params, data, active, part)
                assert torch.equal(got, full[part]), (name, engine.name, part)
            assert not bool(full[9].any())  # inactive row
            loop = _rows(LoopEngine(model, layout, data, 0), params, data, active,
                         list(range(10)))
            scale = float(loop.abs().max())
            tol = 1e-5 if name in ("logistic", "mlp") else 2e-3
            assert float((full - loop).abs().max()) <= tol * max(scale, 1.0), (name, engine.name)


def test_evaluation_is_the_same_for_any_model_split() -> None:
    model = build_model(ModelConfig(name="cnn"), (1, 12, 12), 10)
    layout = ParamLayout.of(model)
    data = _data((1, 12, 12))
    params = flat_params(model).expand(10, -1).clone()
    params += 0.01 * torch.randn(params.shape, generator=torch.Generator().manual_seed(3))
    engine = VectorizedEngine(model, layout, data, 0, chunk=4)
    loss, correct = engine.evaluate_sums(params, {}, data.x, data.y)
    for block in chunk_blocks(10, 4, 3):
        sel = torch.tensor(block)
        part = engine.evaluate_sums(params[sel], {}, data.x, data.y)
        assert torch.equal(part[0], loss[sel]) and torch.equal(part[1], correct[sel])


@pytest.mark.slow
def test_default_cnn_config_is_identical_on_one_two_and_three_processes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The default experiment (CNN on digits, 10 clients) with the vectorized engine: every
    metric of every round equal on 1, 2 and 3 processes (the batched convolution used to drift
    when ranks held 5 instead of 10 clients)."""
    import csv
    import os
    import subprocess
    import sys

    def run(procs: int) -> list[dict[str, str]]:
        out = tmp_path / f"p{procs}"
        cmd = [sys.executable, "-m", "fedweave", "run", "--set", "rounds=3",
               "--set", "engine.name=vectorized", "--set", "output.plots=false",
               "--out", str(out), *(["--procs", str(procs)] if procs > 1 else [])]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
        with open(run_dir / "metrics.csv") as f:
            return [{k: v for k, v in row.items() if k != "wall_time"}
                    for row in csv.DictReader(f)]

    one = run(1)
    assert run(2) == one
    assert run(3) == one


def test_the_users_defaults_are_identical_on_one_and_two_processes_and_on_resume(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    """What a user gets without any setting (CNN, engine.name auto, fedweave's default
    threads): 1 and 2 processes give the same metrics, and a run extended by --resume ends
    with the numbers of an uninterrupted one."""
    import csv
    import subprocess
    import sys

    def fedweave(*args: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "fedweave", *args], capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]

    def rows(out) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
        (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
        with open(run_dir / "metrics.csv") as f:
            return list(csv.DictReader(f))

    def strip(table: list[dict[str, str]]) -> list[tuple[str, ...]]:
        """Every row but its wall-clock column."""
        return [(r["round"], r["node"], r["split"], r["metric"], r["value"], r["sim_time"])
                for r in table]

    fedweave("run", "--set", "rounds=3", "--set", "output.plots=false",
             "--out", str(tmp_path / "one"))
    fedweave("run", "--set", "rounds=3", "--set", "output.plots=false",
             "--out", str(tmp_path / "two"), "--procs", "2")
    assert strip(rows(tmp_path / "two")) == strip(rows(tmp_path / "one"))
    fedweave("run", "--set", "rounds=2", "--set", "output.plots=false",
             "--out", str(tmp_path / "short"))
    (short,) = [p for p in (tmp_path / "short").iterdir() if p.is_dir()]
    fedweave("run", "--resume", str(short), "--set", "rounds=3")
    assert strip(rows(tmp_path / "short")) == strip(rows(tmp_path / "one"))
