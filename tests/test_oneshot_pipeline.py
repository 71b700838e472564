"""`fedweave distill` as a pipeline: records per stage, summary.json, the synthetic set as
safetensors, a kill during synthesis resumes without regenerating and ends with the same
student, teachers reused from another run, the half-data setting, the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.workflows.distill import distill


@pytest.fixture(autouse=True)
def _threads() -> object:
    """The configs pin engine.threads=1 (a subprocess and this process then compute alike);
    restore this process's thread count afterwards."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


TINY = {
    "name": "tiny", "seed": 3, "rounds": 2,
    "algorithm": {"name": "local"},
    "data": {"dataset": "digits", "nodes": 2, "partition": "heterogeneous", "unif": 0.5},
    "model": {"name": "cnn", "norm": "batch", "width": 0.25},
    "train": {"lr": 0.05, "momentum": 0.9, "batch_size": 32},
    "engine": {"threads": 1},
    "output": {"plots": False, "progress": False},
    "distill": {
        "synthesis": {"iterations": 5, "batch_size": 16, "initial_batches": 4},
        "student": {"epochs": 2, "steps_per_epoch": 3, "batch_size": 16,
                    "new_batches_per_epoch": 1, "milestones": [1]},
        "baselines": [],
    },
}


def write_config(path: Path, **changes: dict) -> Path:
    cfg = json.loads(json.dumps(TINY))
    for key, value in changes.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedweave", "distill", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_cli_runs_every_stage_and_writes_the_records(tmp_path: Path) -> None:
    config = write_config(tmp_path / "tiny.yaml", output={"plots": True},
                          distill={**TINY["distill"], "baselines": ["real", "noise"]})
    res = cli(str(config), "--out", str(tmp_path / "runs"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "student test acc" in res.stderr and "baseline noise" in res.stderr
    run = next((tmp_path / "runs").iterdir())
    s = json.loads((run / "summary.json").read_text())
    assert len(s["teachers"]["test_acc"]) == 2 and 0 < s["ensemble"]["test_acc"] <= 1
    assert set(s["baselines"]) == {"real", "noise"}
    assert set(s["wall_s"]) == {"teachers", "synthesize", "student", "baseline-real",
                                "baseline-noise"}
    assert s["student"]["selected_by"] == "val_acc"
    for stage in ("teachers", "student", "baseline-real", "baseline-noise"):
        assert (run / stage / "metrics.csv").is_file()
    rows = (run / "student" / "metrics.csv").read_text().splitlines()
    assert sum(",student,test,acc," in r for r in rows) == 2  # one per epoch
    syn = load_file(str(run / "synthetic.safetensors"))
    assert syn["images"].dtype == torch.uint8 and syn["images"].shape[1:] == (1, 8, 8)
    assert len(syn["labels"]) == (4 + 2) * 16  # initial + one adaptive batch per epoch
    assert (run / "plots" / "synthetic.png").stat().st_size > 1000
    assert not [p for p in run.rglob("*") if p.suffix in (".pt", ".pth", ".pkl", ".pickle")]
    # errors are one line and exit 2
    bad = cli(str(config), "--set", "algorithm.name=fedavg")
    assert bad.returncode == 2 and "algorithm.name=local" in bad.stderr
    assert "Traceback" not in bad.stderr
    bad = cli(str(config), "--set", "distill.synthesis.sampling=5", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "sampling" in bad.stderr


def _kill_when(config: Path, out: Path, log: Path, ready: str) -> Path:
    """Start ``fedweave distill config``, SIGKILL it once the run has the file ``ready``;
    returns the run directory."""
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "fedweave", "distill", str(config),
                                 "--out", str(out)], stdout=f, stderr=f,
                                start_new_session=True)
        deadline = time.time() + 600
        try:
            while time.time() < deadline:
                runs = list(out.glob("tiny-*")) if out.is_dir() else []
                if runs and list(runs[0].glob(ready)):
                    break
                assert proc.poll() is None, log.read_text()
                time.sleep(0.02)
            os.killpg(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
    return runs[0]


def _batches(run: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in (run / "synthesize" / "batches").glob("batch-*.safetensors")}


@pytest.mark.slow
def test_a_kill_during_synthesis_resumes_without_regenerating_to_the_same_student(
        tmp_path: Path) -> None:
    config = write_config(tmp_path / "tiny.yaml", distill={
        **TINY["distill"], "synthesis": {"iterations": 40, "batch_size": 32,
                                         "initial_batches": 8}})
    run = _kill_when(config, tmp_path / "killed", tmp_path / "killed.log",
                     "synthesize/batches/batch-000001.safetensors")  # the first group of two
    finished = _batches(run)
    assert 2 <= len(finished) < 8, "the kill should land during synthesis"
    state = json.loads((run / "pipeline.json").read_text())["stages"]
    assert state["synthesize"]["status"] == "running"
    resumed = distill(resume=run)
    after = _batches(run)
    assert {k: after[k] for k in finished} == finished  # not rewritten
    synth = resumed.summary["synthetic"]
    assert synth["reused"] == len(finished) and synth["generated"] == 8 - len(finished)
    fresh = distill(load_config(config, [f"output.dir={tmp_path / 'fresh'}"]))
    assert resumed.summary["student"] == {**fresh.summary["student"],
                                          "wall_s": resumed.summary["student"]["wall_s"]}
    a = load_file(str(run / "synthetic.safetensors"))
    b = load_file(str(fresh.run_dir / "synthetic.safetensors"))
    assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    ka = load_file(str(sorted((run / "student" / "checkpoints").glob("*.safetensors"))[-1]))
    kb = load_file(str(sorted((fresh.run_dir / "student" / "checkpoints").glob(
        "*.safetensors"))[-1]))
    assert ka.keys() == kb.keys() and all(torch.equal(ka[k], kb[k]) for k in ka)


def test_teachers_are_reused_and_half_the_data_stays_at_the_student(tmp_path: Path) -> None:
    config = write_config(tmp_path / "tiny.yaml", distill={
        **TINY["distill"], "student_shards": 1,
        "student": {**TINY["distill"]["student"], "epochs": 1}})
    first = distill(load_config(config, [f"output.dir={tmp_path}"]))
    s = first.summary
    assert len(s["teachers"]["test_acc"]) == 1  # shard 1 is the student's, not a teacher's
    # heterogeneous(0.5) on 2 shards: the teacher holds the low labels mostly
    assert s["student"]["images"] > 4 * 16 + 16  # real images of the student's shard too
    again = distill(load_config(config, [f"output.dir={tmp_path}"]), teachers_from=first.run_dir)
    assert again.summary["teachers"]["reused_from"].startswith(str(first.run_dir))
    assert not (again.run_dir / "teachers" / "checkpoints").exists()  # nothing trained
    assert again.summary["teachers"]["test_acc"] == s["teachers"]["test_acc"]
    assert again.summary["student"]["test_acc"] == s["student"]["test_acc"]
    other = load_config(config, [f"output.dir={tmp_path}", "rounds=3"])
    with pytest.raises(UserError, match="rounds"):
        distill(other, teachers_from=first.run_dir)


@pytest.mark.parametrize(("change", "words"), [
    (["model.norm=group"], "BatchNorm"),
    (["distill.student.class_weights=[1,2]"], "class_weights"),
    (["data.dataset=synthetic", "data.partition=natural"], "image"),
    (["distill.student_shards=2"], "no teacher"),
])
def test_impossible_settings_are_one_line_errors_before_any_work(
        tmp_path: Path, change: list[str], words: str) -> None:
    config = write_config(tmp_path / "tiny.yaml")
    with pytest.raises(UserError, match=words):
        distill(load_config(config, [f"output.dir={tmp_path / 'runs'}", *change]))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_kill_during_the_student_resumes_from_its_last_epoch(tmp_path: Path) -> None:
    student = {**TINY["distill"]["student"], "epochs": 4, "steps_per_epoch": 30}
    config = write_config(tmp_path / "tiny.yaml", distill={**TINY["distill"],
                                                           "student": student})
    run = _kill_when(config, tmp_path / "killed", tmp_path / "killed.log",
                     "student/checkpoints/round-000002.json")
    state = json.loads((run / "pipeline.json").read_text())["stages"]
    assert state["student"]["status"] == "running"
    resumed = distill(resume=run)
    fresh = distill(load_config(config, [f"output.dir={tmp_path / 'fresh'}"]))
    ka = load_file(str(sorted((run / "student" / "checkpoints").glob("*.safetensors"))[-1]))
    kb = load_file(str(sorted((fresh.run_dir / "student" / "checkpoints").glob(
        "*.safetensors"))[-1]))
    assert all(torch.equal(ka[k], kb[k]) for k in kb)
    assert resumed.summary["student"]["final"] == fresh.summary["student"]["final"] | {
        "epoch": 4}
    rows = (run / "student" / "metrics.csv").read_text().count(",student,test,acc,")
    assert rows == 4  # the epochs after the checkpoint are not recorded twice
