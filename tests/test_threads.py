"""fedweave owns torch's thread count (``fedweave.training.threads``): the rule, the cores it
splits, the record in summary.json and in the engine decision's key, and OMP_WAIT_POLICY in
the processes the command line starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from fedweave.config import ModelConfig
from fedweave.models import build_model
from fedweave.training.threads import (
    CORES_ENV,
    LARGE_STEP_FLOPS,
    WAIT_ENV,
    choose_threads,
    cores,
    step_flops,
)
from tests.conftest import small_config


def test_rule_one_thread_for_small_steps_all_cores_for_large_ones_engine_threads_wins() -> None:
    assert choose_threads(None, 65e6, 8)[0] == 1
    assert choose_threads(None, LARGE_STEP_FLOPS, 8)[0] == 8
    assert choose_threads(None, 5e10, 0)[0] == 1
    assert choose_threads(3, 5e10, 8) == (3, "engine.threads")
    assert choose_threads(3, 1.0, 8)[0] == 3


def test_step_flops_places_the_default_cnn_below_and_resnet_above_the_threshold() -> None:
    cnn = build_model(ModelConfig(), (1, 8, 8), 10)
    state = torch.get_rng_state()
    flops = step_flops(cnn, (1, 8, 8), 32, torch.device("cpu"))
    # conv 1→32 and 32→64 (3×3, padded) on 8×8 and 4×4, linears 256→128→10: 2 FLOPs a MAC
    macs = 32 * 9 * 64 + 64 * 32 * 9 * 16 + 256 * 128 + 128 * 10
    assert flops == 3 * 32 * 2 * macs
    assert flops < LARGE_STEP_FLOPS
    assert cnn.training and torch.equal(torch.get_rng_state(), state)
    resnet = build_model(ModelConfig(name="resnet18"), (3, 32, 32), 10)
    assert step_flops(resnet, (3, 32, 32), 32, torch.device("cpu")) > 50 * LARGE_STEP_FLOPS


def test_cores_split_between_local_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedweave.training import threads

    monkeypatch.setattr(threads, "physical_cpus", lambda: 4)
    monkeypatch.delenv(CORES_ENV, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert cores() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert cores() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert cores() == 1
    monkeypatch.setenv(CORES_ENV, "3")  # sweep --jobs: its share wins
    assert cores() == 3


def test_physical_cpus_counts_this_machines_cores() -> None:
    from fedweave.training.threads import physical_cpus

    assert 1 <= physical_cpus() <= len(os.sched_getaffinity(0))


def test_every_launcher_gets_the_same_count_for_the_default_cnn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A single process, ``--procs 2`` and torchrun (``LOCAL_WORLD_SIZE=2``, its
    ``OMP_NUM_THREADS=1``) on 2 or 16 cores: one thread each (the fast guard of
    tests/test_launchers.py)."""
    from fedweave.training import threads

    flops = step_flops(build_model(ModelConfig(), (1, 8, 8), 10), (1, 8, 8), 32,
                       torch.device("cpu"))
    monkeypatch.delenv(CORES_ENV, raising=False)
    counts = set()
    for cpus in (2, 16):
        monkeypatch.setattr(threads, "physical_cpus", lambda n=cpus: n)
        for local in (None, "2"):
            if local is None:
                monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
            else:
                monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
            counts.add(choose_threads(None, flops, cores())[0])
    assert counts == {1}


def test_summary_records_the_thread_count_and_its_rule(tmp_path: Path) -> None:
    from fedweave.runner import run

    before = torch.get_num_threads()
    try:
        res = run(small_config("rounds=1", f"output.dir={tmp_path / 'a'}"))
        env = json.loads((res.run_dir / "summary.json").read_text())["environment"]
        assert env["threads"] == 1 and env["threads_rule"].startswith("one thread")
        assert torch.get_num_threads() == 1
        res = run(small_config("rounds=1", "engine.threads=2", f"output.dir={tmp_path / 'b'}"))
        env = json.loads((res.run_dir / "summary.json").read_text())["environment"]
        assert (env["threads"], env["threads_rule"]) == (2, "engine.threads")
    finally:
        torch.set_num_threads(before)


def test_engine_decision_is_not_reused_with_another_thread_count(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fedweave.context import build_context
    from fedweave.training import select

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(select, "_DECISIONS", {})
    before = torch.get_num_threads()
    try:
        base = ["model.name=cnn", "data.nodes=3", "engine.name=auto"]
        one = build_context(small_config(*base)).calibration
        again = build_context(small_config(*base)).calibration
        two = build_context(small_config(*base, "engine.threads=2")).calibration
    finally:
        torch.set_num_threads(before)
    assert (one["cached"], one["key"]["threads"]) == (False, 1)
    assert again["cached"] and again["key"]["threads"] == 1
    assert (two["cached"], two["key"]["threads"]) == (False, 2)
    stored = json.loads((tmp_path / "fedweave" / "engine-decisions.json").read_text())
    assert len(stored["decisions"]) == 2


class _Child:
    """A rank that has already exited 0 (what ``launch_local`` polls)."""

    envs: ClassVar[list[dict[str, str]]] = []

    def __init__(self, args: list[str], env: dict[str, str], **kwargs: Any) -> None:
        self.envs.append(env)
        self.returncode = 0

    def poll(self) -> int:
        return 0

    def wait(self) -> int:
        return 0

    def send_signal(self, sig: int) -> None:
        pass


@pytest.mark.parametrize("fork", [True, False])
@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_procs_children_get_passive_openmp_unless_the_user_chose(
        user: str | None, fork: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from fedweave.distributed import launcher

    if user is None:
        monkeypatch.delenv(WAIT_ENV, raising=False)
    else:
        monkeypatch.setenv(WAIT_ENV, user)
    _Child.envs = []
    monkeypatch.setattr(launcher.subprocess, "Popen", _Child)
    monkeypatch.setattr(launcher, "_can_fork", lambda: fork)
    monkeypatch.setattr(launcher, "_fork_rank", lambda entry, args, env, me: _Child(args, env))
    assert launcher.launch_local(2, ["run"], entry=lambda: None) == 0
    assert [e[WAIT_ENV] for e in _Child.envs] == [user or "PASSIVE"] * 2
    assert [e["LOCAL_WORLD_SIZE"] for e in _Child.envs] == ["2", "2"]


def test_sweep_children_get_their_share_of_cores_and_passive_openmp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fedweave.workflows import sweep

    seen: list[dict[str, str]] = []

    def fake_run(args: list[str], env: dict[str, str], **kwargs: Any) -> Any:
        seen.append(env)
        return subprocess.CompletedProcess(args, 0)

    monkeypatch.delenv(WAIT_ENV, raising=False)
    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    point = sweep.Point("p0", {}, None, [], "p0", small_config())
    sweep.run_subprocess(tmp_path, point, tmp_path / "c.yaml", [], threads=3)
    assert seen[0][CORES_ENV] == "3" and seen[0][WAIT_ENV] == "PASSIVE"


@pytest.mark.parametrize("user", [None, "ACTIVE"])
def test_the_command_line_sets_passive_openmp_before_torch_loads(user: str | None) -> None:
    """``fedweave.cli`` (the console script's module, and ``python -m fedweave``'s) sets it
    with torch not yet imported; a user's value stays."""
    code = ("import sys, fedweave.cli.common as c, os; "
            "print(os.environ['OMP_WAIT_POLICY'])")
    probe = ("import sys, builtins, os\n"
             "real = builtins.__import__\n"
             "def guard(name, *a, **k):\n"
             "    if name == 'torch' and 'OMP_WAIT_POLICY' not in os.environ:\n"
             "        raise SystemExit('torch imported before OMP_WAIT_POLICY was set')\n"
             "    return real(name, *a, **k)\n"
             "builtins.__import__ = guard\n" + code.replace("; ", "\n"))
    env = {k: v for k, v in os.environ.items() if k != WAIT_ENV}
    if user is not None:
        env[WAIT_ENV] = user
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [user or "PASSIVE"]
