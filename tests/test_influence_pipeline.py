"""The prune-and-retrain pipeline: ratio 1 reproduces stage 1, --keep lowest keeps exactly the
lowest scores, a kill in stage 2 resumes stage 2 only; the CLI commands; data corruption."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import latest_state

from fedweave.callbacks import CALLBACK_FACTORIES, Callback
from fedweave.data.federated import build_federated_data
from fedweave.plugins import load_config
from fedweave.workflows.prune import PrunePipeline

DEC = ["algorithm.name=dsgd", "topology.name=ring", "model.name=mlp", "model.hidden=[16]",
       "data.nodes=3", "rounds=2", "output.progress=false", "output.plots=false",
       "engine.name=loop"]


def prune(tmp: Path, scorer: str, ratio: float, keep: str = "top", *extra: str,
          balance: str = "class") -> Path:
    cfg = load_config(None, [*DEC, f"output.dir={tmp}", *extra])
    pipe_ = PrunePipeline(cfg, scorer, ratio, keep, balance=balance)
    pipe = pipe_.create()
    pipe_.finish(pipe, pipe.run())
    return pipe.root


def read_scores(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ratio_one_reproduces_stage1_bit_for_bit(tmp_path: Path) -> None:
    root = prune(tmp_path, "random", 1.0)
    a, b = latest_state(root / "stage1"), latest_state(root / "stage2")
    assert torch.equal(a["x"], b["x"])
    summary = json.loads((root / "summary.json").read_text())
    assert summary["stage1"]["final"]["test_acc"] == summary["stage2"]["final"]["test_acc"]
    assert summary["samples_kept"]["total"] == summary["samples_kept"]["total_of"]
    assert set(summary["wall_s"]) == {"stage1", "score", "stage2", "compare"}
    assert (root / "comparison.png").stat().st_size > 0
    assert (root / "stage1" / "influence" / "random" / "histogram.png").is_file()
    # stage 1 kept every checkpoint: it stays scorable later
    assert len(list((root / "stage1" / "checkpoints").glob("round-*.json"))) == 2


def test_keep_lowest_unbalanced_keeps_exactly_the_lowest_scores(tmp_path: Path) -> None:
    root = prune(tmp_path, "random", 0.3, "lowest", balance="none")
    rows = read_scores(root / "stage1" / "influence" / "random" / "scores.csv")
    cfg = load_config(root / "stage2" / "config.yaml")
    kept = build_federated_data(cfg.data, cfg.seed).train_idx
    for node, shard in enumerate(kept):
        mine = sorted((float(r["score"]), int(r["index"])) for r in rows if int(r["node"]) == node)
        want = sorted(i for _, i in mine[: -(-len(mine) * 3 // 10)])
        assert shard.tolist() == want


class _KillStage2(Callback):
    def on_checkpoint(self, runner, r: int) -> None:  # type: ignore[no-untyped-def]
        if runner.config.data.prune.scores is not None and r == 0:
            raise KeyboardInterrupt


def test_killed_in_stage2_resumes_stage2_only(tmp_path: Path) -> None:
    reference = prune(tmp_path / "ref", "tracin", 0.5)
    cfg = load_config(None, [*DEC, f"output.dir={tmp_path / 'killed'}"])
    pipe_ = PrunePipeline(cfg, "tracin", 0.5, "top")
    pipe = pipe_.create()
    factory = lambda config: _KillStage2()  # noqa: E731
    CALLBACK_FACTORIES.append(factory)
    try:
        with pytest.raises(KeyboardInterrupt):
            pipe.run()
    finally:
        CALLBACK_FACTORIES.remove(factory)
    stage1_mtime = (pipe.root / "stage1" / "summary.json").stat().st_mtime_ns
    scores_mtime = (pipe.root / "stage1" / "influence" / "tracin" / "scores.csv").stat().st_mtime_ns
    status = json.loads((pipe.root / "pipeline.json").read_text())["stages"]
    assert status["stage1"]["status"] == "done" and status["stage2"]["status"] == "running"
    again, resumed = PrunePipeline.resume(pipe.root)
    summary = again.finish(resumed, resumed.run())
    assert (pipe.root / "stage1" / "summary.json").stat().st_mtime_ns == stage1_mtime
    assert (pipe.root / "stage1" / "influence" / "tracin" / "scores.csv"
            ).stat().st_mtime_ns == scores_mtime
    ref = json.loads((reference / "summary.json").read_text())
    assert summary["stage2"]["final"]["test_loss"] == ref["stage2"]["final"]["test_loss"]
    assert torch.equal(latest_state(pipe.root / "stage2")["x"],
                       latest_state(reference / "stage2")["x"])


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedweave", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # three subprocesses (~10 s alone on a quiet machine)
def test_cli_prune_and_influence(tmp_path: Path) -> None:
    sets = [a for s in [*DEC, "engine.threads=1"] for a in ("--set", s)]
    proc = cli("prune", "--scorer", "random", "--train-ratio", "0.5", "--out", str(tmp_path),
               *sets, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    root = next(tmp_path.glob("*/summary.json")).parent
    summary = json.loads((root / "summary.json").read_text())
    assert summary["samples_kept"]["total"] * 2 >= summary["samples_kept"]["total_of"]
    assert "stage 2" in proc.stderr + proc.stdout
    proc = cli("influence", str(root / "stage1"), "--scorer", "forgetting", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = read_scores(root / "stage1" / "influence" / "forgetting" / "scores.csv")
    assert len(rows) == summary["samples_kept"]["total_of"]
    assert all(float(r["score"]) <= 0 for r in rows)  # −(forgetting events)
    bad = cli("influence", str(root / "stage1"), "--scorer", "tracin", "--set", "rounds=9",
              cwd=tmp_path)
    assert bad.returncode == 2 and "influence.* keys only" in bad.stderr
    from fedweave.workflows.prune import score_run

    _, meta = score_run(root / "stage1", "dice")  # a finished D-SGD run: replayed with the hook
    assert meta["replayed"] and meta["replay_max_abs_diff"] == 0.0


def test_noise_is_seeded_recorded_and_only_on_the_chosen_nodes() -> None:
    cfg = load_config(None, ["data.nodes=4", "data.label_noise=0.25", "data.noisy_nodes=[1,3]",
                             "data.input_noise=100"])
    a, b = build_federated_data(cfg.data, 0), build_federated_data(cfg.data, 0)
    clean = build_federated_data(load_config(None, ["data.nodes=4"]).data, 0)
    assert a.label_noise is not None and torch.equal(a.label_noise, b.label_noise)
    changed = torch.nonzero(a.y != clean.y).flatten()
    assert torch.equal(changed, a.label_noise)
    on = torch.cat([a.train_idx[1], a.train_idx[3]])
    assert torch.isin(changed, on).all()
    assert len(changed) == sum(-(-len(a.train_idx[j]) // 4) for j in (1, 3))
    xa, _ = a.gather(a.train_idx[1][:5])
    xc, _ = clean.gather(clean.train_idx[1][:5])
    assert (xa - xc).std() > 50  # σ = 100 on node 1's batches
    x0, _ = a.gather(a.train_idx[0][:5])
    assert torch.equal(x0, clean.gather(clean.train_idx[0][:5])[0])


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    from fedweave.errors import UserError

    with pytest.raises(UserError, match=r"needs data\.prune\.scores"):
        load_config(None, ["data.prune.ratio=0.5"])
    with pytest.raises(UserError, match="noisy_nodes"):
        load_config(None, ["data.noisy_nodes=[0]"])
    with pytest.raises(UserError, match="another data partition"):
        bogus = tmp_path / "s.csv"
        bogus.write_text("node,index,score\n0,0,1.0\n")
        build_federated_data(load_config(None, [f"data.prune.scores={bogus}"]).data, 0)
