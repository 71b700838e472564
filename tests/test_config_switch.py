"""Switching a config's algorithm from the command line and in sweeps: ``key!=value``
replaces a section whole; changing ``algorithm.name`` drops the old algorithm's own keys (one
warning naming them and the kept shared ones); keys of a section the run does not use are
warned about."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fedweave.cli import app
from fedweave.config import dump_config
from fedweave.config.load import validate_config
from fedweave.config.no_effect import warn_no_effect
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.workflows.sweep import plan

CLUSTERED = ("rounds: 1\nmodel: {name: logistic}\ndata: {nodes: 6}\n"
             "output: {plots: false, progress: false}\n"
             "algorithm: {name: clustered, k: 2, pca_dim: 3, server_lr: 0.5}\n")


@pytest.fixture
def clustered(tmp_path: Path) -> Path:
    path = tmp_path / "clustered.yaml"
    path.write_text(CLUSTERED)
    return path


def test_switching_the_name_drops_the_old_algorithms_keys_and_says_so(
        clustered: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("fedweave.config.load._WARNED", set())  # once per process otherwise
    with caplog.at_level(logging.WARNING, logger="fedweave"):
        cfg = load_config(clustered, ["algorithm.name=fedavg"])
    assert cfg.algorithm.name == "fedavg" and cfg.algorithm.server_lr == 0.5  # shared: kept
    assert not hasattr(cfg.algorithm, "k")
    (msg,) = [r.getMessage() for r in caplog.records if "replaces clustered" in r.getMessage()]
    assert "dropped algorithm.k, algorithm.pca_dim" in msg
    assert "kept algorithm.server_lr=0.5" in msg and "algorithm!={name: fedavg}" in msg
    # the same through a merged mapping, and keys given with the switch stay (and are checked)
    assert load_config(clustered, ["algorithm={name: scaffold}"]).algorithm.name == "scaffold"
    with pytest.raises(UserError, match=r"algorithm\.k: unknown key"):
        load_config(clustered, ["algorithm.name=fedavg", "algorithm.k=3"])


def test_bang_replaces_a_section_whole(clustered: Path) -> None:
    cfg = load_config(clustered, ["algorithm!={name: fedavg}"])
    assert cfg.algorithm.name == "fedavg" and cfg.algorithm.server_lr == 1.0  # its default
    train = load_config(clustered, ["train.momentum=0.5", "train!={lr: 0.3}"]).train
    assert train.lr == 0.3 and train.momentum == load_config(None).train.momentum


def test_a_misspelt_key_of_the_old_algorithm_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(CLUSTERED.replace("pca_dim", "pca_dims"))
    with pytest.raises(UserError, match=r"algorithm\.pca_dims: unknown key"):
        load_config(path, ["algorithm.name=fedavg"])


def test_a_sweep_over_algorithm_name_plans_and_runs(clustered: Path, tmp_path: Path) -> None:
    points = plan(clustered, {"algorithm.name": ["clustered", "fedavg", "scaffold"]}, None,
                  [], [])
    assert [p.config.algorithm.name for p in points] == ["clustered", "fedavg", "scaffold"]
    assert points[0].config.algorithm.k == 2  # type: ignore[attr-defined]
    res = CliRunner().invoke(app, ["sweep", str(clustered), "--grid",
                                   "algorithm!={name: fedavg},{name: clustered, k: 3}",
                                   "--out", str(tmp_path / "sw")])
    assert res.exit_code == 0, res.output
    assert "algorithm={name: fedavg}" in res.output and "k: 3}" in res.output


def test_topology_keys_on_a_federated_run_are_warned_in_one_line() -> None:
    cfg = load_config(None, ["topology.name=ring", "topology.p=0.3"])
    lines = [m for m in warn_no_effect(cfg) if m.startswith("config: topology.")]
    assert lines == [f"config: topology.{k} has no effect with algorithm.name=fedavg (topology "
                     "applies to decentralized algorithms; fedavg is federated)"
                     for k in ("name", "p")]
    again = validate_config(yaml.safe_load(dump_config(cfg)))  # a dumped config.yaml
    assert not [m for m in warn_no_effect(again) if "topology" in m]
