"""The data, sweep and report commands, run as a user would (typer's CliRunner)."""

import json
from pathlib import Path

from typer.testing import CliRunner

from fedweave.cli import app
from fedweave.runner import run
from tests.conftest import small_config

runner = CliRunner()


def test_data_list_shows_presence_and_path(tmp_path):
    res = runner.invoke(app, ["data", "list", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    lines = {line.split("│")[1].strip(): line for line in res.output.splitlines()
             if line.count("│") >= 3}
    assert "digits" in lines and "yes" in lines["digits"]
    assert "cifar10" in lines and "no" in lines["cifar10"]


def test_data_show_prints_class_counts_and_writes_heatmap(tmp_path):
    png = tmp_path / "p.png"
    res = runner.invoke(app, ["data", "show", "--set", "data.partition=classes",
                              "--set", "data.classes_per_node=2", "--set", "data.nodes=5",
                              "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert png.stat().st_size > 1000
    assert "samples per node" in res.output
    rows = [line for line in res.output.splitlines() if line.strip().startswith("│ 0 ")]
    counts = [int(c) for c in rows[0].split("│")[2:12]]
    assert sum(1 for c in counts if c > 0) == 2  # node 0 holds exactly classes 0 and 1


def test_data_download_unknown_dataset_exits_2(tmp_path):
    res = runner.invoke(app, ["data", "download", "nope", "--root", str(tmp_path)])
    assert res.exit_code == 2


def test_sweep_and_report(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rounds: 1\nmodel: {name: logistic}\ndata: {nodes: 3}\n"
                   "output: {plots: false}\n")
    res = runner.invoke(app, ["sweep", str(cfg), "--grid", "algorithm.name=fedavg,scaffold",
                              "--out", str(tmp_path / "runs")])
    assert res.exit_code == 0, res.output
    assert "scaffold" in res.output and (tmp_path / "runs" / "sweep.json").is_file()
    dirs = sorted(p for p in (tmp_path / "runs").iterdir() if (p / "metrics.csv").is_file())
    assert len(dirs) == 2
    rep = runner.invoke(app, ["report", *map(str, dirs), "--out", str(tmp_path / "rep")])
    assert rep.exit_code == 0, rep.output
    page = (tmp_path / "rep" / "index.html").read_text()
    assert all(d.name in page for d in dirs)
    assert (tmp_path / "rep" / "figures" / "accuracy-vs-round.svg").is_file()


def test_report_rejects_a_non_run_directory(tmp_path):
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2


def test_run_command_progress_and_summary(tmp_path):
    res = runner.invoke(app, ["run", "--set", "rounds=2", "--set", "model.name=logistic",
                              "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output
    assert len(list(Path(tmp_path).iterdir())) == 1
    assert run(small_config("rounds=1"), write=False).summary["rounds"] == 1


def test_hosts_prints_one_torchrun_command_per_host_of_a_seed_hosts_file(tmp_path):
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"hosts": [
        {"name": f"node{i}", "addr": f"10.0.0.{i + 1}", "port": str(10000 + i)}
        for i in range(3)]}))
    res = runner.invoke(app, ["hosts", str(hosts), "exp.yaml", "--port", "29500"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0::2] == ["# on 10.0.0.1", "# on 10.0.0.2", "# on 10.0.0.3"]
    for i, cmd in enumerate(lines[1::2]):
        # static rendezvous: the c10d one would ignore --node-rank and order hosts by name
        assert cmd == (f"torchrun --nnodes 3 --node-rank {i} --nproc-per-node 1 "
                       "--master-addr 10.0.0.1 --master-port 29500 -m fedweave run exp.yaml")


def test_hosts_with_a_malformed_file_exits_2(tmp_path):
    bad = tmp_path / "hosts.json"
    bad.write_text(json.dumps({"hosts": [{"name": "node0"}]}))
    res = runner.invoke(app, ["hosts", str(bad), "exp.yaml"])
    assert res.exit_code == 2 and "expected" in res.output
