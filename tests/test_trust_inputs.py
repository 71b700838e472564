"""Issue 10, careless and hostile input through the CLI: every mistake is exit 2 with one line
naming the cause and the fix, no traceback, no run directory; run names never leave --out.
(Hostile dataset files: tests/test_sources_security.py, e.g.
``test_cli_cifar_payload_exits_2_without_running_it``.)"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from trust_cli import FAST, assert_one_line_error, fedweave, run_dirs

from fedweave.records.rundir import NAME_MAX


def refused(tmp_path: Path, *args: str, needles: tuple[str, ...], out: Path | None = None
            ) -> str:
    out = out or tmp_path / "runs"
    proc = fedweave("run", *args, *FAST, "--out", str(out), cwd=tmp_path)
    message = assert_one_line_error(proc, *needles)
    assert not run_dirs(out)
    return message


# ------------------------------------------------------------------------------ run names
@pytest.mark.parametrize(("name", "expected"), [
    ("../escaped", "escaped"),
    ("/abs/x", "abs-x"),
    ("a" * 300, "a" * NAME_MAX),
], ids=["dotdot", "absolute", "300-chars"])
def test_run_name_is_one_component_under_out(tmp_path: Path, name: str, expected: str) -> None:
    out = tmp_path / "deep" / "runs"
    proc = fedweave("run", *FAST, "--set", f"name={name}", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    made = [p for p in tmp_path.rglob("config.yaml")]
    assert len(made) == 1 and made[0].parent.parent == out, made
    run_dir = made[0].parent.name
    assert run_dir.rsplit("-", 2)[0] == expected  # <slug>-<date>-<time>


def test_nul_and_control_characters_in_name(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('name: "a\\0b\\x01c/../d"\n')  # YAML escapes: NUL, SOH in the name
    out = tmp_path / "runs"
    proc = fedweave("run", str(config), *FAST, "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = run_dirs(out)
    assert run_dir.name.startswith("a-b-c-..-d-") or run_dir.name.startswith("a-b-c-d-"), \
        run_dir.name
    assert "\x00" not in run_dir.name and "/" not in run_dir.name


# ------------------------------------------------------------------------------ output.dir
def test_out_is_a_file_checked_before_data_is_built(tmp_path: Path) -> None:
    """Reported even though the data would fail too: --out is checked first."""
    (tmp_path / "f").write_text("x")
    refused(tmp_path, "--set", "data.dataset=cifar10", "--set", "data.root=/nonexistent",
            needles=("is a file, not a folder", "--out"), out=tmp_path / "f")


def test_out_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    refused(tmp_path, needles=("is a file, not a folder",), out=tmp_path / "f" / "sub")


def test_out_in_proc(tmp_path: Path) -> None:
    refused(tmp_path, needles=("not a place for run directories",), out=Path("/proc/x"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_out_unwritable(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    refused(tmp_path, needles=("choose another --out",), out=ro / "sub")


# ------------------------------------------------------------------------------ config files
@pytest.mark.parametrize(("content", "needle"), [
    (b"\x7fELF\x02\x01\x01\x00\x00\x00 binary", "not a text file (it contains NUL bytes"),
    (b"name: caf\xe9\n", "not a text file (byte 9 is not UTF-8"),
    (b"rounds: 1\nrounds: 2\n", "duplicate key 'rounds'"),
], ids=["binary", "latin-1", "duplicate-key"])
def test_bad_config_file(tmp_path: Path, content: bytes, needle: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(content)
    refused(tmp_path, str(config), needles=(needle, str(config)))


@pytest.mark.parametrize(("override", "needles"), [
    ("train.lr=1e400", ("train.lr", "finite")),
    ("topology.name=complete", ("topology.name applies to decentralized algorithms",)),
    ("clock.asynchronous=true", ("clock.asynchronous", "synchronous rounds")),
    ("algorithm.clients_per_round=50", ("clients_per_round=50 exceeds data.nodes=10",)),
    ("model.hidden=[0]", ("model.hidden.0", "greater than or equal to 1")),
    ("engine.device=banana", ("engine.device", "'banana' is not a device")),
], ids=["lr-1e400", "topology-for-fedavg", "async-for-fedavg", "cohort-above-nodes",
        "hidden-0", "device-banana"])
def test_refused_overrides(tmp_path: Path, override: str, needles: tuple[str, ...]) -> None:
    extra = ["--set", "model.name=mlp"] if override.startswith("model.hidden") else []
    refused(tmp_path, "--set", override, *extra, needles=needles)


def test_clustered_k_above_the_cohort(tmp_path: Path) -> None:
    refused(tmp_path, "--set", "algorithm.name=clustered", "--set", "algorithm.k=5",
            "--set", "algorithm.clients_per_round=3",
            needles=("algorithm.k=5 clusters exceed the 3 clients sampled per round",))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch has a usable CUDA device")
def test_cuda_on_a_cpu_only_torch_before_data(tmp_path: Path) -> None:
    """Refused before the data is loaded: the missing dataset is not what is reported."""
    refused(tmp_path, "--set", "engine.device=cuda", "--set", "data.dataset=cifar10",
            "--set", "data.root=/nonexistent", needles=("engine.device=cuda", "engine.device=cpu"))


def test_set_mapping_merges_into_the_section(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("data: {nodes: 6, partition: iid, val_fraction: 0.2}\n")
    out = tmp_path / "runs"
    proc = fedweave("run", str(config), *FAST, "--set", "data={nodes: 4}", "--out", str(out),
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (run_dir,) = run_dirs(out)
    data = yaml.safe_load((run_dir / "config.yaml").read_text())["data"]
    assert (data["nodes"], data["partition"], data["val_fraction"]) == (4, "iid", 0.2)


# ------------------------------------------------------------------------------ topology.file
@pytest.mark.parametrize(("content", "needle"), [
    (b"\x00\x01\x02\x03", "NUL"),
    (b"0 1\n1 2\n\xff\xfe\n", "not a text file"),
    (b"[[0, 1e400]]", "expected a JSON list of [i, j] pairs"),  # inf as a node id
], ids=["binary", "non-utf8", "inf-node-id"])
def test_bad_topology_file(tmp_path: Path, content: bytes, needle: str) -> None:
    edges = tmp_path / "edges.txt"
    edges.write_bytes(content)
    refused(tmp_path, "--set", "algorithm.name=dsgd", "--set", "topology.name=edges",
            "--set", f"topology.file={edges}", needles=(needle, str(edges)))


def test_bad_clock_trace(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_bytes(b"node,seconds_per_sample\n0,\xff\n")
    refused(tmp_path, "--set", f"clock.trace={trace}", needles=("clock.trace", "not a text"))


# ------------------------------------------------------------------------------ --procs
@pytest.mark.slow
def test_bad_input_under_procs_is_one_line(tmp_path: Path) -> None:
    """Validated once by the launcher, before any rank starts: one line, not one per rank."""
    for bad in (["--set", "engine.device=banana"],
                ["--set", "data.dataset=cifar10", "--set", f"data.root={tmp_path}"],
                # found by the ranks while they build the data: rank 0 alone says it
                ["--set", "data.nodes=1000", "--set", "data.min_samples=5"]):
        proc = fedweave("run", *FAST, *bad, "--procs", "2", "--out", str(tmp_path / "runs"),
                        cwd=tmp_path)
        assert_one_line_error(proc)
        assert not run_dirs(tmp_path / "runs")
