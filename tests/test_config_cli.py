"""Configuration loading, overrides and the CLI's exit codes for bad input."""

import subprocess
import sys
from pathlib import Path

import pytest

from fedweave.config import load_config
from fedweave.errors import UserError


def test_defaults_and_overrides(tmp_path):
    cfg = load_config(None, ["data.alpha=0.3", "algorithm.name=fedprox",
                             "algorithm.prox_mu=0.1", "train.lr=1e-2", "rounds=5"])
    assert cfg.data.alpha == 0.3 and cfg.algorithm.prox_mu == 0.1 and cfg.rounds == 5
    assert cfg.algorithm.name == "fedprox" and cfg.train.lr == 0.01
    path = tmp_path / "c.toml"
    path.write_text('rounds = 2\n[algorithm]\nname = "scaffold"\nclients_per_round = 3\n')
    cfg = load_config(path)
    assert cfg.algorithm.name == "scaffold" and cfg.algorithm.clients_per_round == 3


@pytest.mark.parametrize("override,needle", [
    ("data.alpah=1", "data.alpah: unknown key"),
    ("rounds=ten", "rounds"),
    ("data.alpha=-1", "data.alpha"),
    ("algorithm.name=nope", "unknown algorithm 'nope'"),
    ("algorithm.k=3", "algorithm.k: unknown key"),  # a clustered key under fedavg
])
def test_bad_config_names_the_key(override, needle):
    with pytest.raises(UserError, match="config error") as err:
        load_config(None, [override])
    assert needle in str(err.value)


def fedweave(*args, cwd):
    return subprocess.run([sys.executable, "-m", "fedweave", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,needle", [
    (["--set", "data.alpah=1"], "data.alpah: unknown key"),
    (["--set", "rounds=ten"], "rounds"),
    (["--set", "data.alpha=-0.5"], "data.alpha"),
    (["--set", "data.nodes=5000"], "data.nodes=5000"),
    (["--set", "data.dataset=cifar10", "--set", "data.root=/nonexistent"], "/nonexistent"),
    (["missing.yaml"], "config file not found"),
])
def test_cli_bad_input_exits_2_without_run_dir(tmp_path, args, needle):
    out = tmp_path / "runs"
    proc = fedweave("run", *args, "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr.split())
    assert needle in message
    assert "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_missing_dataset_message_says_how_to_get_it(tmp_path):
    proc = fedweave("run", "--set", "data.dataset=cifar10", "--set", f"data.root={tmp_path}",
                    "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "fedweave data download cifar10" in " ".join(proc.stderr.split())


def test_every_shipped_config_loads():
    configs = sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml"))
    for path in configs:
        load_config(path)


def test_configs_default_yaml_is_the_builtin_default():
    path = Path(__file__).parents[1] / "configs" / "default.yaml"
    assert load_config(path) == load_config(None)
