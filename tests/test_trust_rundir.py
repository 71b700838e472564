"""Issue 10, run directories through the CLI: damaged, forged or stray checkpoint files, edited
configs, concurrent writers and non-finite training never end in a traceback, a mixed run or
a checkpoint of a diverged state; a damaged latest checkpoint falls back to the previous one
and the run ends equal to an uninterrupted one."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file
from trust_cli import FAST, assert_one_line_error, fedweave, metric_rows, popen, run_dirs

from fedweave.records.checkpoints import meta_digest, sha256

THREE = ["--set", "rounds=3", "--set", "data.nodes=6", "--set", "algorithm.clients_per_round=3"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-round run (checkpoints of rounds 2 and 3 kept): the reference."""
    base = tmp_path_factory.mktemp("reference")
    proc = fedweave("run", *FAST, *THREE, "--out", str(base / "runs"), cwd=base)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = run_dirs(base / "runs")
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("round-*.json")) == [
        "round-000002.json", "round-000003.json"]
    return run_dir


@pytest.fixture
def copy(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / finished.name))


def ckpt(run_dir: Path, r: int, suffix: str = ".safetensors") -> Path:
    return run_dir / "checkpoints" / f"round-{r:06d}{suffix}"


def signed(entry: dict) -> str:  # type: ignore[type-arg]
    """A checkpoint JSON re-signed (its meta_sha256 recomputed), as a forger would."""
    return json.dumps({**entry, "meta_sha256": meta_digest(entry)})


def resume(run_dir: Path, *extra: str):  # type: ignore[no-untyped-def]
    return fedweave("run", "--resume", str(run_dir), *extra, cwd=run_dir.parent)


def assert_same_as(reference: Path, run_dir: Path) -> None:
    assert metric_rows(run_dir) == metric_rows(reference)
    a, b = load_file(str(ckpt(reference, 3))), load_file(str(ckpt(run_dir, 3)))
    assert a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    fa = json.loads((reference / "summary.json").read_text())["final"]
    fb = json.loads((run_dir / "summary.json").read_text())["final"]
    assert fa == fb


def resumes_from_round_2_to_the_reference(finished: Path, run_dir: Path, why: str) -> None:
    proc = resume(run_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = " ".join(proc.stderr.split())
    assert "resuming from round 2 instead" in text and why in text, text[-2000:]
    assert_same_as(finished, run_dir)


# ------------------------------------------------------------------ edited checkpoint metadata
@pytest.mark.parametrize(("edit", "why"), [
    ({"backend": "vectorized"}, "round-000003.json does not match its checksum"),
    pytest.param({"backend": "no_such_engine"}, "round-000003.json does not match its checksum",
                 marks=pytest.mark.slow),
    pytest.param({"totals": {"bytes_up": 1, "bytes_down": 1, "sim_time_s": 0.0, "wall_s": 0.0}},
                 "round-000003.json does not match its checksum", marks=pytest.mark.slow),
    pytest.param({"history": []}, "round-000003.json does not match its checksum",
                 marks=pytest.mark.slow),
])
def test_edited_checkpoint_metadata_falls_back(finished: Path, copy: Path,
                                               edit: dict, why: str) -> None:  # type: ignore[type-arg]
    meta = ckpt(copy, 3, ".json")
    meta.write_text(json.dumps({**json.loads(meta.read_text()), **edit}))
    resumes_from_round_2_to_the_reference(finished, copy, why)


@pytest.mark.parametrize(("key", "why"), [
    ("totals", "its totals are missing"),
    pytest.param("best", "its best round is missing", marks=pytest.mark.slow),
    pytest.param("history", "its history is missing", marks=pytest.mark.slow),
    pytest.param("round_log", None, marks=pytest.mark.slow)])
def test_checkpoint_metadata_without_a_key_is_one_line(copy: Path, key: str,
                                                       why: str | None) -> None:
    """Keys removed and the checksum recomputed: never a KeyError; the file is named."""
    for r in (2, 3):
        meta = ckpt(copy, r, ".json")
        entry = json.loads(meta.read_text())
        entry.pop(key)
        meta.write_text(signed(entry))
    proc = resume(copy, "--set", "rounds=4")
    if why is None:  # the round log only rebuilds damaged records: not needed to resume
        assert proc.returncode == 0, proc.stderr[-3000:]
        return
    assert_one_line_error(proc, "every checkpoint", "round-000003.json", why)


@pytest.mark.parametrize(("where", "make"), [
    (".lock", "dir"), ("checkpoints", "file"), ("nodes", "file"), ("metrics.csv", "dir")])
def test_structural_damage_is_one_line(copy: Path, where: str, make: str) -> None:
    path = copy / where
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    path.mkdir() if make == "dir" else path.write_text("x")
    message = assert_one_line_error(resume(copy, "--set", "rounds=4"), str(copy))
    assert "damaged" in message or "cannot take its lock" in message


# ------------------------------------------------------------------ damaged latest checkpoint
@pytest.mark.parametrize(("damage", "why"), [
    ("garbled", "does not match its checksum"),
    ("truncated", "does not match its checksum"),
    ("missing", "is missing"),
])
def test_damaged_latest_checkpoint_falls_back_and_matches(finished: Path, copy: Path,
                                                          damage: str, why: str) -> None:
    path = ckpt(copy, 3)
    blob = path.read_bytes()
    if damage == "garbled":  # tensor bytes changed, the header intact: caught by the checksum
        path.write_bytes(blob[:-16] + bytes(16))
    elif damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    else:
        path.unlink()
    stray = [copy / "checkpoints" / ".round-000004.safetensors.tmp",
             ckpt(copy, 7)]  # a killed write's leftovers: no metadata refers to them
    for s in stray:
        s.write_bytes(b"leftover")
    resumes_from_round_2_to_the_reference(finished, copy, why)
    assert not any(s.exists() for s in stray)


def test_damaged_latest_json_and_checkpoint(finished: Path, copy: Path) -> None:
    (copy / "checkpoints" / "latest.json").write_text("{garbled")
    ckpt(copy, 3, ".json").write_text("[]")
    resumes_from_round_2_to_the_reference(finished, copy, "latest.json is damaged")


def test_latest_json_round_beyond_the_run(finished: Path, copy: Path) -> None:
    """latest.json claims round 99: only checkpoints that exist and verify count."""
    latest = copy / "checkpoints" / "latest.json"
    latest.write_text(json.dumps({**json.loads(latest.read_text()), "round": 99}))
    ckpt(copy, 3).write_bytes(b"x")
    resumes_from_round_2_to_the_reference(finished, copy, "round 3")


def test_forged_checkpoint_beyond_the_run_is_refused(copy: Path) -> None:
    """A verified checkpoint that claims round 99 of a 3-round run: refused, not "finished"."""
    shutil.copy(ckpt(copy, 3), ckpt(copy, 99))
    entry = json.loads(ckpt(copy, 3, ".json").read_text())
    ckpt(copy, 99, ".json").write_text(signed(
        {**entry, "round": 99, "file": ckpt(copy, 99).name}))
    latest = copy / "checkpoints" / "latest.json"
    latest.write_text(json.dumps({**json.loads(latest.read_text()), "round": 99,
                                  "file": ckpt(copy, 99).name}))
    assert_one_line_error(resume(copy), "checkpoint is of round 99", "rounds=3")


def test_checkpoint_file_outside_the_run_directory_is_never_read(finished: Path, copy: Path,
                                                                tmp_path: Path) -> None:
    """round-3's metadata names a file outside checkpoints/ (a valid copy, checksum right):
    refused, so the run falls back to round 2 and reruns round 3."""
    outside = tmp_path / "outside.safetensors"
    shutil.copy(ckpt(copy, 3), outside)
    meta = ckpt(copy, 3, ".json")
    entry = json.loads(meta.read_text())
    meta.write_text(signed({**entry, "file": "../../outside.safetensors",
                            "sha256": sha256(outside)}))
    resumes_from_round_2_to_the_reference(finished, copy, "outside")


def test_missing_tensor_is_one_line(copy: Path) -> None:
    for r in (2, 3):
        tensors = load_file(str(ckpt(copy, r)))
        tensors.pop(sorted(tensors)[0])
        save_file(tensors, str(ckpt(copy, r)))
        meta = ckpt(copy, r, ".json")
        meta.write_text(signed({**json.loads(meta.read_text()),
                                "sha256": sha256(ckpt(copy, r))}))
    assert_one_line_error(resume(copy, "--set", "rounds=4"), "does not fit", "start a new run")


def test_every_checkpoint_damaged_is_one_line(copy: Path) -> None:
    for r in (2, 3):
        ckpt(copy, r).write_bytes(b"")
    assert_one_line_error(resume(copy), "every checkpoint", "is damaged")


def test_other_checkpoint_format_is_one_line(copy: Path) -> None:
    latest = copy / "checkpoints" / "latest.json"
    latest.write_text(json.dumps({**json.loads(latest.read_text()), "format": 1}))
    assert_one_line_error(resume(copy), "checkpoint format 1", "another fedweave version")


@pytest.mark.parametrize("damage", ["emptied", pytest.param("binary", marks=pytest.mark.slow),
                                    pytest.param("cut", marks=pytest.mark.slow)])
def test_damaged_records_are_rebuilt_from_the_checkpoint(finished: Path, copy: Path,
                                                         damage: str) -> None:
    """metrics.csv, nodes/global.csv and clients.csv emptied, binary or cut short, and the
    latest checkpoint damaged: the resume from round 2 rebuilds rounds 1-2 from that
    checkpoint's history, round log and client rows, reruns round 3, and the records equal the
    reference."""
    for path in (copy / "metrics.csv", copy / "nodes" / "global.csv", copy / "clients.csv"):
        if damage == "emptied":
            path.write_text("")
        elif damage == "binary":
            path.write_bytes(b"\xff\x00garbage" * 50)
        else:
            path.write_text("\n".join(path.read_text().splitlines()[:2]))
    ckpt(copy, 3).write_bytes(b"")  # from round 2: round 3 is rerun after the rebuilt rows
    proc = resume(copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rebuilt metrics.csv, nodes/global.csv, clients.csv" in " ".join(proc.stderr.split())
    assert_same_as(finished, copy)
    for name in ("nodes/global.csv", "clients.csv"):
        assert (copy / name).read_text() == (finished / name).read_text(), name


def test_killed_before_the_first_checkpoint_restarts_in_place(finished: Path, copy: Path
                                                              ) -> None:
    for f in (copy / "checkpoints").iterdir():
        f.unlink()
    (copy / "summary.json").unlink()
    proc = resume(copy)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_as(finished, copy)


# ------------------------------------------------------------------ changed configs
def test_edited_config_yaml_is_refused(copy: Path) -> None:
    config = copy / "config.yaml"
    config.write_text(config.read_text().replace("lr: 0.05", "lr: 0.5"))
    assert_one_line_error(resume(copy, "--set", "rounds=4"), "config.yaml was changed",
                          "train.lr")


def test_edited_model_is_refused_not_a_size_mismatch(copy: Path) -> None:
    config = copy / "config.yaml"
    config.write_text(config.read_text().replace("name: logistic", "name: mlp"))
    assert_one_line_error(resume(copy, "--set", "rounds=4"), "config.yaml was changed", "model")


def test_resume_override_that_changes_numbers_is_refused(copy: Path) -> None:
    assert_one_line_error(resume(copy, "--set", "rounds=4", "--set", "train.lr=0.5"),
                          "train.lr", "would change the run's numbers")


# ------------------------------------------------------------------ concurrent writers
def _wait_for_lock(run_dir: Path, pid: int, proc) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 120
    lock = run_dir / ".lock"
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.is_file() and lock.read_text().strip() == str(pid):
            return
        time.sleep(0.05)
    raise AssertionError(f"the first writer never took the lock: {proc.communicate()}")


@pytest.mark.slow
def test_two_concurrent_resumes(copy: Path) -> None:
    """One resume holds the run; the second exits 2 naming its pid; every round is in
    metrics.csv once."""
    # enough rounds that the first is still running when the second has started up
    first = popen("run", "--resume", str(copy), "--set", "rounds=200", cwd=copy.parent)
    _wait_for_lock(copy, first.pid, first)
    second = resume(copy, "--set", "rounds=200")
    assert_one_line_error(second, f"in use by process {first.pid}")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    keys = [(r["round"], r["node"], r["split"], r["metric"]) for r in metric_rows(copy)]
    assert len(keys) == len(set(keys))
    assert {int(r) for r, *_ in keys} == set(range(1, 201))


def test_resuming_a_live_run_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    live = popen("run", *FAST, "--set", "rounds=500", "--out", str(out), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not run_dirs(out) and time.monotonic() < deadline:
            time.sleep(0.05)
        (run_dir,) = run_dirs(out)
        _wait_for_lock(run_dir, live.pid, live)
        assert_one_line_error(resume(run_dir), f"in use by process {live.pid}")
    finally:
        live.kill()
        live.communicate()


# ------------------------------------------------------------------ non-finite training
def test_nan_at_round_1_with_eval_every_3(tmp_path: Path) -> None:
    """Finiteness is checked every round: NaN in round 1 is reported as round 1 (not 3), with
    the run directory; no checkpoint of the non-finite state is written."""
    out = tmp_path / "runs"
    proc = fedweave("run", *FAST, "--set", "rounds=3", "--set", "model.name=mlp",
                    "--set", "model.hidden=[16]", "--set", "train.lr=1e12",
                    "--set", "output.eval_every=3", "--out", str(out), cwd=tmp_path)
    (run_dir,) = run_dirs(out)
    assert_one_line_error(proc, "training diverged", "in round 1:", "lower train.lr",
                          str(run_dir))
    assert not list((run_dir / "checkpoints").glob("round-*"))


def test_killed_after_the_last_checkpoint_resume_writes_the_summary(finished: Path,
                                                                    copy: Path) -> None:
    """Killed between the last checkpoint and summary.json: the resume only finishes the run
    (summary and plots), with the uninterrupted result; a finished run is still refused."""
    (copy / "summary.json").unlink()
    shutil.rmtree(copy / "plots", ignore_errors=True)
    proc = resume(copy)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads((copy / "summary.json").read_text())
    want = json.loads((finished / "summary.json").read_text())
    assert got["final"] == want["final"] and got["best"] == want["best"]
    assert_one_line_error(resume(copy), "already finished its 3 rounds")
