"""Smoke test of the benchmark suite: the quick suite's smallest row and the JSON schema."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import needs_fashion

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~10 s alone: one subprocess loading Fashion-MNIST
@needs_fashion
def test_quick_smallest_row_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    row = "cross-device-logistic:fedweave-vectorized"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--rows", row,
         "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["quick"] is True and report["device"] == "cpu"
    assert set(report) >= {"command", "cpus", "torch", "rows", "suite_s"}
    r = report["rows"][row]
    assert "error" not in r, r
    assert r["engine"] == "vectorized"
    assert r["wall_s"] > 0 and r["process_s"] >= r["wall_s"]
    assert r["peak_rss_mb"] > 0
    assert 0.0 <= r["test_acc"] <= 1.0
    assert len(r["round_s"]) == 2
    assert "cross-device-logistic" in proc.stdout  # the table


@pytest.mark.slow
def test_quick_baseline_rows_run(tmp_path: Path) -> None:
    """The plain loop and the centralized limit build their configs like fedweave's rows (the
    built-in algorithms registered first)."""
    for row in ("cross-device-logistic:plain-sequential",
                "cross-device-logistic:centralized-limit"):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--rows", row,
             "--json", str(tmp_path / "bench.json")], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert "ERROR" not in proc.stdout, proc.stdout


BENCH = ROOT / "benchmarks"


def _bench_module(name: str):  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH))


def test_cross_device_ratios_are_per_repeat_medians(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ratios pair the contenders of one repeat (run back to back), failed runs drop out, and
    a missing Flower venv is a "not installed" row."""
    cd = _bench_module("cross_device")
    res = {cd.DEFAULTS: [{"whole_s": 10.0, "round_loop_s": 4.0, "test_acc": 0.6},
                         {"whole_s": 20.0, "round_loop_s": 8.0, "test_acc": 0.6},
                         {"whole_s": 5.0, "round_loop_s": 1.0, "error": "timed out"}],
           cd.PLAIN: [{"whole_s": 15.0, "round_loop_s": 12.0, "test_acc": 0.7},
                      {"whole_s": 60.0, "round_loop_s": 16.0, "test_acc": 0.7},
                      {"whole_s": 1.0, "round_loop_s": 1.0, "test_acc": 0.7}],
           cd.LIMIT: [{"whole_s": 3.0, "round_loop_s": 2.0}, {"whole_s": 3.0,
                                                               "round_loop_s": 2.0}]}
    r = cd.ratio_values(res)
    assert r["whole process, plain loop / fedweave defaults"] == [2.25, 1.5, 3.0]
    assert r["round loop, plain loop / fedweave defaults"] == [2.5, 2.0, 3.0]
    assert r["round loop, fedweave defaults / batched limit"] == [3.0, 2.0, 4.0]
    assert not any("Flower" in k for k in r)
    monkeypatch.delenv("FEDWEAVE_FLOWER_PYTHON", raising=False)
    monkeypatch.setattr(cd, "DEFAULT_FLOWER", ROOT / "no-such-venv" / "python")
    assert cd.flower_python(None) is None
    text = cd.table(res, "not installed")
    assert f"| {cd.FLOWER} | not installed |" in text
    assert "| 15.00 (10.00–20.00) |" in text  # the failed repeat is not in the median
    assert "1 failed: timed out" in text


def test_gpu_rows_say_not_measured_without_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the rows are measured, not skipped")
    out = tmp_path / "cuda.json"
    monkeypatch.setattr(sys, "argv", ["cross_device.py", "--device", "cuda", "--json", str(out)])
    _bench_module("cross_device").main()
    assert "not measured (no CUDA)" in capsys.readouterr().out
    assert json.loads(out.read_text())["status"] == "not measured (no CUDA)"
    monkeypatch.setattr(sys, "argv", ["distributed.py", "--device", "cuda"])
    _bench_module("distributed").main()
    assert "2 NCCL ranks: not measured (no CUDA)" in capsys.readouterr().out


def test_plain_digits_split_matches_fedweave(tmp_path: Path) -> None:
    """The plain digits loop gets fedweave's default shards and initial model: its hand-written
    CNN takes the state dict as is and computes fedweave's outputs."""
    import torch

    dd = _bench_module("digits_default")
    plain = _bench_module("plain_digits")
    from fedweave.data.federated import build_federated_data
    from fedweave.plugins import load_config

    info = dd.write_split(tmp_path / "split.pt")
    cfg = load_config(None, [])
    data = build_federated_data(cfg.data, cfg.seed)
    assert info["train_sizes"] == [len(i) for i in data.train_idx]
    assert info["val_sizes"] == [len(i) for i in data.val_idx]
    split = torch.load(tmp_path / "split.pt")
    assert len(split["test_rows"]) == len(data.test_y) == info["test"]
    model = plain.cnn()
    model.load_state_dict(split["init"])  # strict: same names and shapes
    from fedweave.models import build_model
    from fedweave.rng import derive_seed

    torch.manual_seed(derive_seed(cfg.seed, "init"))
    ref = build_model(cfg.model, data.input_shape, data.num_classes)
    x = data.features(data.test_x[:16])
    torch.testing.assert_close(model(x), ref(x))


@pytest.mark.slow  # a few processes loading Fashion-MNIST
@needs_fashion
def test_cross_device_tiny_interleaved_run(tmp_path: Path) -> None:
    import yaml

    tiny = {"data": {"nodes": 50}, "algorithm": {"clients_per_round": 5}, "rounds": 2}
    paths = []
    for name in ("cross-device-mlp.yaml", "cross-device-mlp-defaults.yaml"):
        cfg = yaml.safe_load((BENCH / "configs" / name).read_text())
        cfg["data"].update(tiny["data"])
        cfg["algorithm"].update(tiny["algorithm"])
        cfg["rounds"] = tiny["rounds"]
        paths.append(tmp_path / name)
        paths[-1].write_text(yaml.safe_dump(cfg))
    out = tmp_path / "cd.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "cross_device.py"), "--config", str(paths[0]),
         "--defaults-config", str(paths[1]), "--repeats", "1", "--only", "fedweave", "plain",
         "batched", "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    rows = report["results"]
    assert len(rows) == 5 and all(len(v) == 1 and "error" not in v[0] for v in rows.values())
    defaults = rows["fedweave run (defaults)"][0]
    assert defaults["whole_s"] > defaults["round_loop_s"] > 0
    assert set(defaults["timing"]) >= {"setup_s", "rounds_s", "finish_s"}
    assert all(0 <= v[0]["test_acc"] <= 1 for v in rows.values())
    assert "whole process, plain loop / fedweave defaults" in report["ratios"]
    assert "round loop, fedweave defaults / batched limit + evaluation" in report["ratios"]
    limit = rows["batched limit (limit.py)"][0]
    with_eval = rows["batched limit + evaluation (limit.py --evaluate)"][0]
    assert with_eval["local_steps"] > 0 and limit["local_steps"] > 0
    assert "| contender |" in proc.stdout


@pytest.mark.slow  # two processes, one round each
def test_digits_default_one_round(tmp_path: Path) -> None:
    out = tmp_path / "dd.json"
    proc = subprocess.run([sys.executable, str(BENCH / "digits_default.py"), "--rounds", "1",
                           "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())["results"]
    fw, plain = rows["fedweave run (no config)"][0], rows[
        "plain PyTorch loop (plain_digits.py)"][0]
    assert "error" not in fw and "error" not in plain
    # the same model, shards, start and one epoch of SGD: round 1 lands in the same place
    assert abs(fw["test_acc"] - plain["test_acc"]) < 0.15


@pytest.mark.slow  # starts a local Ray cluster
@needs_fashion
def test_flower_harness_runs_when_its_venv_exists(tmp_path: Path) -> None:
    import yaml

    python = _bench_module("cross_device").flower_python(None)
    if python is None:
        pytest.skip("no Flower venv ($FEDWEAVE_FLOWER_PYTHON)")
    cfg = yaml.safe_load((BENCH / "configs" / "cross-device-mlp.yaml").read_text())
    cfg["data"]["nodes"], cfg["algorithm"]["clients_per_round"] = 20, 4
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = subprocess.run([str(python), str(BENCH / "flower_fedavg.py"), str(path), "--rounds",
                           "2"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rounds"] == 2 and 0 <= out["test_acc"] <= 1
    assert out["whole_sim_s"] >= out["round_loop_s"] > 0
