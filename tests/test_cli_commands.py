"""The data, sweep and report commands, run as a user would (typer's CliRunner)."""

import json
from pathlib import Path

import pytest
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
    res = runner.invoke(app, ["hosts", str(hosts), "exp.yaml"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0::2] == ["# on 10.0.0.1", "# on 10.0.0.2", "# on 10.0.0.3"]
    for i, cmd in enumerate(lines[1::2]):
        # static rendezvous on the first entry's addr:port (the c10d one would ignore
        # --node-rank and order hosts by name)
        assert cmd == (f"torchrun --nnodes 3 --node-rank {i} --nproc-per-node 1 "
                       "--master-addr 10.0.0.1 --master-port 10000 -m fedweave run exp.yaml")
    # torch.distributed listens on the rendezvous port only: one warning names the others
    warnings = [line for line in res.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert "node1 (10001), node2 (10002) are not used" in warnings[0]
    # --port replaces the first entry's port
    res = runner.invoke(app, ["hosts", str(hosts), "exp.yaml", "--port", "29500"])
    assert res.exit_code == 0, res.output
    assert all("--master-addr 10.0.0.1 --master-port 29500 " in cmd
               for cmd in res.stdout.splitlines()[1::2])


def test_hosts_sharing_one_port_print_no_warning(tmp_path):
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"a": {"addr": "h1", "port": 9000},
                                 "b": {"addr": "h2", "port": "9000"}}))
    res = runner.invoke(app, ["hosts", str(hosts), "exp.yaml"])
    assert res.exit_code == 0, res.output
    assert res.stderr == ""
    assert res.stdout.splitlines()[3] == ("torchrun --nnodes 2 --node-rank 1 --nproc-per-node 1 "
                                          "--master-addr h1 --master-port 9000 -m fedweave run "
                                          "exp.yaml")


@pytest.mark.parametrize(("second", "match"), [
    ({"name": "node1", "addr": "127.0.0.1", "port": 10000}, "both use 127.0.0.1:10000"),
    ({"name": "node1", "addr": "localhost", "port": "70000"}, "port '70000'; a port is an"),
    ({"name": "node1", "addr": "localhost", "port": 0}, "port 0; a port is an integer"),
    ({"name": "node1", "addr": "localhost", "port": "10001x"}, "port '10001x'"),
    ({"name": "node1", "addr": "localhost", "port": 10001.5}, "port 10001.5"),
    ({"name": "node1", "addr": "localhost", "port": True}, "port True"),
    ({"name": "node0", "addr": "localhost", "port": 10001}, "node0 is listed twice"),
])
def test_hosts_with_conflicting_or_invalid_ports_exits_2_with_one_line(tmp_path, second, match):
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"hosts": [
        {"name": "node0", "addr": "localhost", "port": "10000"}, second]}))
    res = runner.invoke(app, ["hosts", str(hosts), "exp.yaml"])
    assert res.exit_code == 2
    assert res.stdout == ""
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("error: ")
    assert match in res.stderr


def test_hosts_with_a_malformed_file_exits_2(tmp_path):
    bad = tmp_path / "hosts.json"
    bad.write_text(json.dumps({"hosts": [{"name": "node0"}]}))
    res = runner.invoke(app, ["hosts", str(bad), "exp.yaml"])
    assert res.exit_code == 2 and "expected" in res.output
