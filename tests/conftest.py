"""Shared fixtures: small fast configs on the built-in digits data."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from fedweave.config import Config, load_config
from fedweave.plugins import load_builtins

load_builtins()

torch.set_num_threads(int(os.environ.get("FEDWEAVE_TEST_THREADS", "2")))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def small_config(*overrides: str) -> Config:
    """FedAvg on digits with an MLP: a few seconds at most."""
    base = ["rounds=3", "model.name=mlp", "model.hidden=[64]", "data.nodes=5",
            "output.progress=false", "output.plots=false"]
    return load_config(None, base + list(overrides))


@pytest.fixture
def tmp_out(tmp_path: Path) -> str:
    return f"output.dir={tmp_path / 'runs'}"


needs_fashion = pytest.mark.skipif(not FASHION_DIR.is_dir(),
                                   reason="apt-get install dataset-fashion-mnist")


def latest_state(run_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of a run directory's newest checkpoint (the file latest.json names)."""
    import json

    from safetensors.torch import load_file

    latest = json.loads((Path(run_dir) / "checkpoints" / "latest.json").read_text())
    return load_file(str(Path(run_dir) / "checkpoints" / latest["file"]))


#: More variants of a command-line case whose first variant stays in the default suite: each
#: starts fedweave in a fresh process (1–2 s of interpreter and torch import), so they run in
#: the slow step (``pytest -m slow``, the second step of ``.ci/run``) to keep the default
#: command under 8 minutes on 2 cores.
SUBPROCESS_VARIANTS = {
    "test_trust_inputs.py::test_run_name_is_one_component_under_out[absolute]",
    "test_trust_inputs.py::test_run_name_is_one_component_under_out[300-chars]",
    "test_trust_inputs.py::test_bad_config_file[latin-1]",
    "test_trust_inputs.py::test_bad_config_file[duplicate-key]",
    "test_trust_inputs.py::test_refused_overrides[topology-for-fedavg]",
    "test_trust_inputs.py::test_refused_overrides[async-for-fedavg]",
    "test_trust_inputs.py::test_refused_overrides[cohort-above-nodes]",
    "test_trust_inputs.py::test_refused_overrides[hidden-0]",
    "test_trust_inputs.py::test_refused_overrides[device-banana]",
    "test_trust_inputs.py::test_bad_topology_file[non-utf8]",
    "test_trust_inputs.py::test_bad_topology_file[inf-node-id]",
    "test_trust_inputs.py::test_out_under_a_file",
    "test_trust_inputs.py::test_out_in_proc",
    "test_trust_rundir.py::test_structural_damage_is_one_line[nodes-file]",
    "test_trust_rundir.py::test_structural_damage_is_one_line[checkpoints-file]",
    "test_trust_rundir.py::test_structural_damage_is_one_line[metrics.csv-dir]",
    "test_trust_rundir.py::test_damaged_latest_checkpoint_falls_back_and_matches"
    "[truncated-does not match its checksum]",
    "test_trust_rundir.py::test_damaged_latest_checkpoint_falls_back_and_matches"
    "[missing-is missing]",
    "test_config_cli.py::test_cli_bad_input_exits_2_without_run_dir[args1-rounds]",
    "test_config_cli.py::test_cli_bad_input_exits_2_without_run_dir[args2-data.alpha]",
    "test_distributed.py::test_federated_equals_single_process[scaffold-2]",
    "test_distributed.py::test_federated_equals_single_process[centralized-2]",
    "test_distributed.py::test_decentralized_equals_single_process[dsgd-2-all_gather]",
    "test_trust_code.py::test_a_run_directory_never_imports_its_plugins[absolute-influence]",
    "test_trust_code.py::test_a_run_directory_never_imports_its_plugins[absolute-prune_stage1]",
    "test_trust_code.py::test_a_run_directory_never_imports_its_plugins[absolute-config_show]",
    "test_trust_code.py::test_a_run_directory_never_imports_its_plugins[absolute-export]",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    found, files = set(), set()
    for item in items:
        key = f"{Path(str(item.fspath)).name}::{item.name}"
        files.add(key.split("::")[0])
        if key in SUBPROCESS_VARIANTS:
            item.add_marker(pytest.mark.slow)
            found.add(key)
    # a renamed test would slip back into the default suite: its file collected, its name not
    # (a run of the whole file set only: ``-k`` and single files select fewer on purpose)
    expected = {k for k in SUBPROCESS_VARIANTS if k.split("::")[0] in files}
    if len(files) > 50 and found != expected:
        missing = sorted(expected - found)
        raise pytest.UsageError(f"tests/conftest.py SUBPROCESS_VARIANTS names no test: {missing}")


class Killed(Exception):
    """Raised from a progress callback to kill a run in the middle."""


def resumes_exactly(tmp_path: Path, config: Callable[..., Config], *overrides: str,
                    rounds: int = 4, kill_at: int = 2) -> tuple[Path, Path]:
    """A run killed in round ``kill_at`` + 1 (its rows written, its checkpoint not) and resumed
    ends with the uninterrupted run's numbers and checkpoint tensors (``config(*overrides)``
    builds each). Returns the run directories (uninterrupted, killed and resumed)."""
    import json

    from fedweave.runner import run

    args = [f"output.dir={tmp_path}", f"rounds={rounds}", *overrides]
    full = run(config(*args, "name=full"))

    def kill(r: int, total: int, row: object) -> None:
        if r == kill_at:
            raise Killed

    with pytest.raises(Killed):
        run(config(*args, "name=killed"), progress=kill)
    killed = next(tmp_path.glob("killed-*"))
    assert json.loads((killed / "checkpoints/latest.json").read_text())["round"] == kill_at - 1
    resumed = run(resume=killed)
    assert resumed.summary["final"] == full.summary["final"]
    assert full.run_dir is not None
    a, b = latest_state(full.run_dir), latest_state(killed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return full.run_dir, killed
