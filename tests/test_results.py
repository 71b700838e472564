"""Seeing, comparing and sharing results (issue 15), as a user meets them: log lines through a
pipe, signals, resume, the config reference, the records, model export, the HTML report in a
headless browser, sweeps, trackers and notifications."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from fedweave.cli import app
from fedweave.config import AGGREGATOR_CONFIGS, ALGORITHM_CONFIGS, Config
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.runner import run
from tests.conftest import small_config

cli = CliRunner()
REPO = Path(__file__).parents[1]
LOGISTIC = ["model.name=logistic", "data.nodes=4", "output.plots=false"]


def fedweave(*args: str, cwd: Path, env: dict[str, str] | None = None,
             timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedweave", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=timeout, env={**os.environ, **(env or {})})


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def only_run(folder: Path) -> Path:
    (d,) = [p for p in folder.iterdir() if (p / "config.yaml").is_file()]
    return d


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def metrics(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in csv.DictReader(f)]


# ----------------------------------------------------------------------------- terminal, signals


def _start_and_signal(tmp_path: Path, signum: int, overrides: list[str]
                      ) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``fedweave run`` with pipes (not a TTY); send ``signum`` once round 2 is logged."""
    proc = subprocess.Popen([sys.executable, "-m", "fedweave", "run", *sets(overrides),
                             "--out", str(tmp_path / "runs")], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if line.startswith("round 2/"):
            proc.send_signal(signum)
            break
    rest, _ = proc.communicate(timeout=300)
    return proc, lines + rest.splitlines()


@pytest.mark.slow
def test_sigterm_through_a_pipe_prints_lines_checkpoints_and_resumes_to_the_same_numbers(
        tmp_path: Path) -> None:
    overrides = [*LOGISTIC, "rounds=8", "name=job"]
    proc, lines = _start_and_signal(tmp_path, signal.SIGTERM, overrides)
    assert proc.returncode == 143, lines
    run_dir = only_run(tmp_path / "runs")
    assert lines[0] == f"run directory: {run_dir}"  # printed before the first round
    rounds = [ln for ln in lines if ln.startswith("round ")]
    assert rounds[0].startswith("round 1/8  train loss ")
    for part in ("val loss", "test loss", "s/round", "ETA", "sim "):
        assert part in rounds[0], part
    done = int(rounds[-1].split()[1].split("/")[0])
    assert lines[-1] == f"interrupted after round {done} — resume with: fedweave run " \
                        f"--resume {run_dir}"
    ckpt = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert ckpt["round"] == done and done < 8
    assert not (run_dir / "summary.json").exists()

    resumed = run(resume=run_dir)
    whole = run(load_config(None, [*overrides, f"output.dir={tmp_path / 'whole'}"]))
    assert resumed.summary["final"] == whole.summary["final"]
    assert resumed.summary["best"] == whole.summary["best"]
    assert metrics(run_dir) == metrics(whole.run_dir)  # type: ignore[arg-type]
    env = resumed.summary["environment"]
    assert env["resumed"][0]["from_round"] == done and env["command"].endswith(
        f"--out {tmp_path / 'runs'}")


def test_ctrl_c_stops_after_the_round_with_exit_130(tmp_path: Path) -> None:
    proc, lines = _start_and_signal(tmp_path, signal.SIGINT, [*LOGISTIC, "rounds=12"])
    assert proc.returncode == 130, lines
    assert "SIGINT: stopping after this round" in "\n".join(lines)
    assert lines[-1].startswith("interrupted after round ")
    assert "Traceback" not in "\n".join(lines)


def test_live_bar_on_a_terminal_shows_val_acc_best_s_per_round_and_eta() -> None:
    import io

    from rich.console import Console

    from fedweave.cli.progress import TerminalProgress

    buf = io.StringIO()
    bar = TerminalProgress(Console(file=buf, force_terminal=True, width=200))
    run(small_config("rounds=2"), callbacks=[bar], write=False)
    text = buf.getvalue()
    for part in ("round 2/2", "val acc", "best", "(r", "s/round", "ETA"):
        assert part in text, part


@pytest.mark.slow
def test_version_completion_and_did_you_mean(tmp_path: Path) -> None:
    from fedweave.version import __version__

    res = cli.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"fedweave {__version__}"
    assert "--install-completion" in cli.invoke(app, ["--help"]).output
    done = cli.invoke(app, [], prog_name="fedweave", env={
        "_FEDWEAVE_COMPLETE": "complete_bash", "COMP_WORDS": "fedweave config s",
        "COMP_CWORD": "2"})
    assert done.output.split() == ["show"]
    for override, hint in (("round=2", "round: unknown key (did you mean rounds?)"),
                           ("data.alpah=1", "(did you mean data.alpha?)"),
                           ("algorithm.k=3", "a key of algorithm.name: clustered"),
                           ("output.tensorbord=true", "did you mean output.tensorboard?")):
        with pytest.raises(UserError) as err:
            load_config(None, [override])
        assert hint in str(err.value)
    bad = tmp_path / "c.yaml"
    bad.write_text("rounds: 2\ndata:\n  nodes: [4\n")
    proc = fedweave("run", str(bad), cwd=tmp_path)
    assert proc.returncode == 2 and f"{bad}:4" in proc.stderr
    proc = fedweave("run", "--set", "round=2", cwd=tmp_path)
    assert proc.returncode == 2 and "did you mean rounds?" in proc.stderr
    assert "Traceback" not in proc.stderr
    import importlib.util

    if importlib.util.find_spec("datasets") is None:  # the fix is printed as written
        proc = fedweave("run", "--set", "data.dataset=hf:mnist", cwd=tmp_path)
        assert proc.returncode == 2 and "pip install 'fedweave[hf]'" in proc.stderr


def test_resume_extends_with_rounds_and_refuses_other_changes(tmp_path: Path) -> None:
    base = [*LOGISTIC, f"output.dir={tmp_path}"]
    short = run(load_config(None, [*base, "rounds=2", "name=short"]))
    d = str(short.run_dir)
    done = cli.invoke(app, ["run", "--resume", d])
    assert done.exit_code == 2 and "already finished its 2 rounds" in done.output
    assert "--set rounds=4" in " ".join(done.output.split())
    other = cli.invoke(app, ["run", "--resume", d, "--set", "train.lr=0.1"])
    assert other.exit_code == 2 and "train.lr" in other.output
    more = cli.invoke(app, ["run", "--resume", d, "--set", "rounds=4"])
    assert more.exit_code == 0, more.output
    direct = run(load_config(None, [*base, "rounds=4", "name=direct"]))
    extended = json.loads((Path(d) / "summary.json").read_text())
    assert extended["final"] == direct.summary["final"] and extended["rounds"] == 4
    assert load_config(Path(d) / "config.yaml").rounds == 4


def test_run_name_follows_algorithm_and_dataset() -> None:
    assert load_config(None).name == "fedavg-digits"
    assert load_config(None, ["algorithm.name=scaffold"]).name == "scaffold-digits"
    assert load_config(None, ["data.dataset=synthetic", "data.partition=natural",
                              "algorithm.name=dsgd"]).name == "dsgd-synthetic"
    assert load_config(None, ["name=mine", "algorithm.name=scaffold"]).name == "mine"


# ----------------------------------------------------------------------------- config reference


def _all_fields() -> list[tuple[str, Any]]:
    from fedweave.config.reference import section_of

    out = []

    def walk(cls: Any, prefix: str) -> None:
        for name, field in cls.model_fields.items():
            out.append((prefix + name, field))
            sub = section_of(field)
            if sub is not None and not (cls is Config and name in ("algorithm", "aggregator")):
                walk(sub, f"{prefix}{name}.")

    walk(Config, "")
    for name, cls in ALGORITHM_CONFIGS.classes.items():
        walk(cls, f"algorithm[{name}].")
    for name, cls in AGGREGATOR_CONFIGS.classes.items():
        walk(cls, f"aggregator[{name}].")
    return out


def test_every_field_of_the_tree_has_a_description() -> None:
    fields = _all_fields()
    assert len(fields) > 120
    missing = [path for path, f in fields
               if not f.description and not path.endswith("].name")]
    assert not missing, f"fields without description=: {missing}"
    units = {path: (f.json_schema_extra or {}).get("unit") for path, f in fields}
    assert units["clock.swap_timeout"] == "s" and units["clock.bandwidth_up"] == "bytes/s"


def test_config_docs_is_current_and_config_show_prints_the_resolved_tree() -> None:
    from fedweave.config.reference import markdown

    committed = (REPO / "docs" / "config.md").read_text()
    assert markdown() == committed, "regenerate: fedweave config docs > docs/config.md"
    for key in ("`algorithm.piw`", "`clock.swap_timeout`", "`notify.events`",
                "### `algorithm.name: scaffold`"):
        assert key in committed
    res = cli.invoke(app, ["config", "show", "--set", "algorithm.name=pdmm_isvr",
                           "--set", "topology.name=ring", "--set", "clock.swap_timeout=2.5"])
    assert res.exit_code == 0, res.output
    rows = {line.split("│")[1].strip(): line for line in res.output.splitlines()
            if line.count("│") > 5}
    piw = rows["algorithm.piw"]
    assert "1.0" in piw and "penalty weight" in piw
    assert "2.5" in rows["clock.swap_timeout"] and "│ s " in rows["clock.swap_timeout"]
    assert "name" in rows and "pdmm_isvr-digits" in rows["name"]
    changed = cli.invoke(app, ["config", "show", "--changed", "--set", "rounds=7"])
    keys = [line.split("│")[1].strip() for line in changed.output.splitlines()
            if line.count("│") > 5]
    assert keys == ["rounds"]


# ----------------------------------------------------------------------------- records


def test_records_traffic_lr_time_clients_and_environment(tmp_path: Path) -> None:
    """metrics.csv rows per round add up to the summary; clients.csv is the cohort; each
    client's validation of the global model, weighted by its samples, is the global
    validation accuracy; summary.json names the environment and the config's git commit."""
    repo = tmp_path / "exp"
    repo.mkdir()
    cfg = repo / "c.yaml"
    cfg.write_text("rounds: 4\nmodel: {name: logistic}\ndata: {nodes: 6}\n"
                   "algorithm: {name: fedavg, clients_per_round: 3}\n"
                   "train: {scheduler: step, step_size: 2, gamma: 0.5, lr: 0.1}\n"
                   "output: {plots: false, client_eval: all}\n")
    commit = None
    if shutil.which("git"):
        git = ["git", "-C", str(repo), "-c", "user.email=a@b", "-c", "user.name=a"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "c.yaml"], check=True)
        subprocess.run([*git, "commit", "-qm", "exp"], check=True)
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
    res = run(cfg, overrides=[f"output.dir={tmp_path / 'runs'}"])
    d, s = res.run_dir, res.summary
    assert d is not None
    rows = rows_of(d / "metrics.csv")
    per_round = {(int(r["round"]), r["metric"]): float(r["value"]) for r in rows
                 if r["split"] == "round"}
    assert sum(per_round[(k, "bytes_up")] for k in range(1, 5)) == s["bytes_up"]
    assert sum(per_round[(k, "bytes_down")] for k in range(1, 5)) == s["bytes_down"]
    assert math.isclose(sum(per_round[(k, "sim_s")] for k in range(1, 5)), s["sim_time_s"])
    assert [per_round[(k, "lr")] for k in range(1, 5)] == [0.1, 0.1, 0.05, 0.05]
    clients = rows_of(d / "clients.csv")
    assert not (d / "nodes" / "0.csv").exists()  # one table, not one file per client
    for k in range(1, 5):
        trained = [int(c["client"]) for c in clients if int(c["round"]) == k and c["train_loss"]]
        assert len(trained) == len(set(trained)) == 3
        assert all(float(c["train_loss"]) > 0 for c in clients if c["train_loss"])
        # client_eval: all validates every client every evaluation
        assert sorted(int(c["client"]) for c in clients if int(c["round"]) == k) == \
            list(range(6))
    val = json.loads((d / "partition.json").read_text())["val"]
    last = {int(c["client"]): float(c["val_acc"]) for c in clients if int(c["round"]) == 4}
    weighted = sum(last[i] * val[i] for i in range(6)) / sum(val)
    assert math.isclose(weighted, s["final"]["val_acc"], rel_tol=1e-9)
    f = s["final"]
    assert f["clients_val_acc_min"] == min(last.values())
    assert f["clients_val_acc_max"] == max(last.values())
    assert math.isclose(f["clients_val_acc_mean"], sum(last.values()) / 6)
    assert f["clients_val_n"] == 6
    assert s["best"]["selected_by"] == "val_acc"
    assert s["best"]["val_acc"] == max(h["val_acc"] for h in res.history)
    env = s["environment"]
    assert env["torch"] == torch.__version__ and env["processes"] == 1 and env["host"]
    assert env["python"] == sys.version.split()[0]
    if commit is not None:
        assert env["git"] == {"commit": commit, "dirty": False}


def test_per_client_validation_is_one_pass_over_all_clients() -> None:
    """200 clients: the model runs once per 2048 validation samples, not once per client."""
    from fedweave.evaluation import client_validation

    res = run(small_config("rounds=1", "data.nodes=200", "data.partition=iid",
                           "data.val_fraction=0.3", "algorithm.clients_per_round=5"),
              write=False)
    algo = res.algorithm
    assert algo is not None
    calls = []
    hook = algo.ctx.model.register_forward_hook(lambda m, i, o: calls.append(len(i[0])))
    try:
        per = client_validation(algo)
    finally:
        hook.remove()
    assert per is not None and len(per["acc"]) == 200
    assert len(calls) == math.ceil(int(per["count"].sum()) / 2048)
    assert sum(calls) == int(per["count"].sum())


# ----------------------------------------------------------------------------- models out


def _test_accuracy(module: torch.nn.Module, cfg: Config) -> float:
    from fedweave.data.federated import build_federated_data

    data = build_federated_data(cfg.data, cfg.seed)
    module.eval()
    with torch.no_grad():
        logits = module(data.features(data.test_x))
    return float((logits.argmax(1) == data.test_y).double().mean())


def test_exported_state_dict_reproduces_the_final_test_accuracy(tmp_path: Path) -> None:
    import fedweave
    from fedweave.models import build_model

    res = run(small_config(f"output.dir={tmp_path}", "output.keep=best", "rounds=4"))
    d = res.run_dir
    assert d is not None and "load_model" in dir(fedweave)
    out = tmp_path / "model.safetensors"
    exp = cli.invoke(app, ["export", str(d), "--out", str(out)])
    assert exp.exit_code == 0, exp.output
    cfg = load_config(d / "config.yaml")
    facts = json.loads((d / "model.json").read_text())
    model = build_model(cfg.model, tuple(facts["input_shape"]), facts["num_classes"])
    model.load_state_dict(load_file(str(out)), strict=True)
    assert _test_accuracy(model, cfg) == res.summary["final"]["test_acc"]
    assert _test_accuracy(fedweave.load_model(d), cfg) == res.summary["final"]["test_acc"]
    best = cli.invoke(app, ["export", str(d), "--best", "--out", str(tmp_path / "b.st")])
    assert best.exit_code == 0, best.output
    model.load_state_dict(load_file(str(tmp_path / "b.st")))
    assert _test_accuracy(model, cfg) == res.summary["best"]["test_acc"]
    gone = cli.invoke(app, ["export", str(d), "--round", "1"])
    assert gone.exit_code == 2 and "no checkpoint of round 1" in gone.output


def test_export_of_chosen_decentralized_nodes(tmp_path: Path) -> None:
    res = run(load_config(None, [*LOGISTIC, "rounds=2", "algorithm.name=dsgd",
                                 "topology.name=ring", "model.norm=batch",
                                 f"output.dir={tmp_path}"]))
    d = res.run_dir
    assert d is not None
    exp = cli.invoke(app, ["export", str(d), "--node", "1", "--node", "3",
                           "--out", str(tmp_path / "m.safetensors")])
    assert exp.exit_code == 0, exp.output
    cfg = load_config(d / "config.yaml")
    import fedweave

    for node in ("1", "3"):
        state = load_file(str(tmp_path / f"m-{node}.safetensors"))
        module = fedweave.load_model(d, node=node)
        assert set(state) == set(module.state_dict())
        acc = float(rows_of(d / "nodes" / f"{node}.csv")[-1]["test_acc"])
        assert _test_accuracy(module, cfg) == acc
    bad = cli.invoke(app, ["export", str(d), "--node", "9"])
    assert bad.exit_code == 2 and "no such model" in bad.output


# ----------------------------------------------------------------------------- report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(page: Path, png: Path) -> list[str]:
    """Render ``page`` headless; returns the browser's console lines."""
    assert CHROMIUM is not None
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--enable-logging=stderr",
                           "--v=0", f"--screenshot={png}", "--window-size=1280,2200",
                           page.resolve().as_uri()], capture_output=True, text=True,
                          timeout=120)
    assert png.is_file(), proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


def visible(html: str) -> str:
    """The page without inlined images and the script."""
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html).split("<script>")[0]


def _killed_run(tmp_path: Path) -> Path:
    class Killed(Exception):
        pass

    def kill(r: int, total: int, row: dict[str, float]) -> None:
        if r == 3:
            raise Killed

    with pytest.raises(Killed):
        run(small_config(f"output.dir={tmp_path}", "name=killed", "rounds=5"), progress=kill)
    return next(tmp_path.glob("killed-*"))


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium")
def test_html_report_is_self_contained_and_renders_without_console_errors(
        tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    runs = tmp_path / "runs"
    fed = run(small_config(f"output.dir={runs}", "name=fed", "output.plots=true"))
    dec = run(load_config(None, [*LOGISTIC, "rounds=3", "algorithm.name=dsgd", "name=dec",
                                 "topology.name=ring", "output.plots=true",
                                 f"output.dir={runs}"]))
    killed = _killed_run(runs)
    res = cli.invoke(app, ["report", str(fed.run_dir), str(dec.run_dir), str(killed),
                           "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    page = tmp_path / "rep" / "index.html"
    html = page.read_text()
    for needle in ("unfinished: round 3 of 5", "algorithm.name", "Accuracy vs simulated time",
                   "Accuracy vs communicated bytes", "Spread over nodes", "Partition",
                   "Topology", "best (by validation)"):
        assert needle in html, needle
    assert not re.search(r"\bnan\b", visible(html), re.IGNORECASE)
    assert "http://" not in html and "https://" not in html
    assert html.count('<img src="data:image/png;base64,') == html.count("<img ")
    for fmt in ("png", "svg", "pdf"):
        assert (tmp_path / "rep" / "figures" / f"accuracy-vs-round.{fmt}").stat().st_size > 1000
    svg = (tmp_path / "rep" / "figures" / "accuracy-vs-bytes.svg").read_text()
    assert "communicated bytes" in svg and "accuracy" in svg  # axis labels
    console = _screenshot(page, tmp_path / "shot.png")
    assert console == [], console
    image = torch.from_numpy(np.asarray(Image.open(tmp_path / "shot.png").convert("L")))
    assert image.float().std() > 10 and (image < 200).float().mean() > 0.01  # not blank
    broken = tmp_path / "broken.html"  # the check sees a figure that does not load
    broken.write_text(html.replace('src="data:image/png;base64,', 'src="missing.png#', 1))
    assert any("figure failed to load" in line for line in _screenshot(broken, tmp_path / "b.png"))


def test_report_of_a_killed_run_alone_shows_what_it_has(tmp_path: Path) -> None:
    killed = _killed_run(tmp_path)
    res = cli.invoke(app, ["report", str(killed), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "unfinished: round 3 of 5" in html
    assert ">–<" in html and not re.search(r"\bnan\b", visible(html), re.IGNORECASE)


# ----------------------------------------------------------------------------- sweeps


def test_sweep_validates_every_point_before_running_any(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rounds: 1\nmodel: {name: logistic}\ndata: {nodes: 3}\n")
    out = tmp_path / "sweep"
    proc = fedweave("sweep", str(cfg), "--grid", "train.lr=0.05,abc", "--out", str(out),
                    cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "sweep point lr=abc" in proc.stderr and "train.lr" in proc.stderr
    assert "nothing was run" in proc.stderr and not out.exists()


def test_sweep_with_seeds_writes_csv_mean_std_skips_finished_points_and_reports(
        tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rounds: 2\nmodel: {name: logistic}\ndata: {nodes: 3}\n"
                   "output: {plots: false}\n")
    out = tmp_path / "sweep"
    args = ["sweep", str(cfg), "--grid", "train.lr=0.05,0.2", "--seeds", "2", "--out", str(out)]
    res = cli.invoke(app, args)
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("[")]
    assert len(lines) == 4 and lines[0].startswith("[1/4] lr=0.05 seed 0: test acc ")
    rows = rows_of(out / "sweep.csv")
    assert [(r["train.lr"], r["seed"]) for r in rows] == [
        ("0.05", "0"), ("0.05", "1"), ("0.2", "0"), ("0.2", "1")]
    assert all(r["status"] == "finished" for r in rows)
    accs = [float(r["final_test_acc"]) for r in rows if r["train.lr"] == "0.2"]
    import statistics

    pm = f"{statistics.fmean(accs):.4f} ± {statistics.stdev(accs):.4f}"
    assert pm in res.output
    for r in rows:  # each point ran with its own seed
        assert load_config(out / r["run_dir"] / "config.yaml").seed == int(r["seed"])
    shutil.rmtree(out / rows[1]["run_dir"])  # as if that point had never run
    again = cli.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped") == 3
    assert sum(1 for ln in again.output.splitlines()
               if ln.startswith("[") and "skipped" not in ln) == 1
    other = cli.invoke(app, ["sweep", str(cfg), "--grid", "train.lr=0.3", "--out", str(out)])
    assert other.exit_code == 2 and "holds another sweep" in other.output
    rep = cli.invoke(app, ["report", str(out), "--out", str(tmp_path / "rep")])
    assert rep.exit_code == 0, rep.output
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "Sweep points (mean ± std over seeds)" in html and pm in html


@pytest.mark.slow
def test_sweep_runs_points_as_parallel_subprocesses(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rounds: 1\nmodel: {name: logistic}\ndata: {nodes: 3}\n"
                   "output: {plots: false}\n")
    out = tmp_path / "sweep"
    proc = fedweave("sweep", str(cfg), "--grid", "algorithm.name=fedavg,scaffold", "--jobs",
                    "2", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 at a time" in proc.stderr
    assert sum(1 for ln in proc.stderr.splitlines() if ln.startswith("[")) == 2
    for name in ("fedavg", "scaffold"):
        log = (out / "logs" / f"algorithm-{name}.log").read_text()
        assert log.startswith(f"run directory: {out / f'algorithm-{name}'}")
        assert json.loads((out / f"algorithm-{name}" / "summary.json").read_text())[
            "algorithm"] == name


# ----------------------------------------------------------------------------- trackers


def test_tensorboard_events_hold_the_round_and_node_scalars(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = run(load_config(None, [*LOGISTIC, "rounds=3", "algorithm.name=dsgd",
                                 "topology.name=ring", "output.tensorboard=true",
                                 f"output.dir={tmp_path}"]))
    assert res.run_dir is not None
    events = EventAccumulator(str(res.run_dir / "tensorboard"))
    events.Reload()
    test = [(e.step, e.value) for e in events.Scalars("accuracy/test")]
    assert test == [(h["round"], pytest.approx(h["test_acc"])) for h in res.history]
    node = [e.value for e in events.Scalars("nodes/2/test_acc")]
    last = rows_of(res.run_dir / "nodes" / "2.csv")
    assert node == [pytest.approx(float(r["test_acc"])) for r in last]
    assert events.Tags()["tensors"] == ["config/text_summary"]
    text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "algorithm:\n  name: dsgd" in text
    assert (res.run_dir / "tensorboard" / "hparams").is_dir()


def test_mlflow_file_store_holds_params_metrics_and_status(tmp_path: Path) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    res = run(load_config(None, [*LOGISTIC, "rounds=3", f"output.mlflow={uri}",
                                 "train.lr=0.07", f"output.dir={tmp_path / 'runs'}"]))
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(res.summary and "fedavg-digits")
    assert exp is not None
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["train.lr"] == "0.07"
    history = client.get_metric_history(mlrun.info.run_id, "test_acc")
    assert [(m.step, m.value) for m in history] == [
        (h["round"], pytest.approx(h["test_acc"])) for h in res.history]


# ----------------------------------------------------------------------------- notifications


class Hook(BaseHTTPRequestHandler):
    """Records every request (method, path or absolute URL, headers, JSON body)."""

    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Hook.received.append({"path": self.path, "auth": self.headers.get("Authorization"),
                              "json": json.loads(body or b"{}")})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def endpoint() -> Any:
    Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


def _files_with(folder: Path, secret: bytes) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret in p.read_bytes()]


@pytest.mark.slow
def test_notifications_arrive_on_finish_and_failure_and_the_token_is_nowhere(
        tmp_path: Path, endpoint: int) -> None:
    pytest.importorskip("apprise")
    token = "s3cr3t-T0KEN-42"
    url = f"json://bot:{token}@127.0.0.1:{endpoint}/hook"
    out = tmp_path / "runs"
    ok = fedweave("run", *sets([*LOGISTIC, "rounds=4", "name=notified",
                                "notify.events=[start,every_k,finish,failure]",
                                "notify.every=2"]), "--out", str(out), cwd=tmp_path,
                  env={"FEDWEAVE_NOTIFY": url})
    assert ok.returncode == 0, ok.stderr
    titles = [m["json"]["title"] for m in Hook.received]
    assert titles == ["fedweave: notified started", "fedweave: notified round 2/4",
                      "fedweave: notified round 4/4", "fedweave: notified finished"]
    run_dir = only_run(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    finish = Hook.received[-1]["json"]
    assert f"test acc {summary['final']['test_acc']:.4f}" in finish["message"]
    assert str(run_dir) in finish["message"] and finish["type"] == "success"
    assert Hook.received[0]["path"] == "/hook" and Hook.received[0]["auth"].startswith("Basic")
    Hook.received.clear()
    secrets = tmp_path / "secrets" / "notify.txt"  # the file form, outside the run directory
    secrets.parent.mkdir()
    secrets.write_text(f"# my hooks\n{url}\n")
    bad = fedweave("run", *sets([*LOGISTIC, "rounds=3", "name=diverges", "model.name=mlp",
                                 "model.hidden=[16]", "train.lr=1e12",
                                 f"notify.urls_file={secrets}"]), "--out", str(out),
                   cwd=tmp_path)
    assert bad.returncode == 2
    (failure,) = [m["json"] for m in Hook.received]
    assert failure["title"] == "fedweave: diverges stopped" and failure["type"] == "failure"
    assert "DivergenceError" in failure["message"] and "round 1" in failure["message"]
    for d in out.iterdir():
        assert _files_with(d, token.encode()) == [], d
    assert token not in ok.stderr + ok.stdout + bad.stderr + bad.stdout


@pytest.mark.slow
def test_a_failing_notifier_never_fails_the_run_and_proxies_are_honoured(
        tmp_path: Path, endpoint: int) -> None:
    pytest.importorskip("apprise")
    closed = fedweave("run", *sets([*LOGISTIC, "rounds=2"]), "--out", str(tmp_path / "a"),
                      cwd=tmp_path, env={"FEDWEAVE_NOTIFY": "json://127.0.0.1:9/nobody"})
    assert closed.returncode == 0, closed.stderr
    assert "notify: a message to json:// was not delivered" in closed.stderr
    # the endpoint as an HTTP proxy: the message to an unreachable host goes through it
    proxied = fedweave("run", *sets([*LOGISTIC, "rounds=2"]), "--out", str(tmp_path / "b"),
                       cwd=tmp_path, env={"FEDWEAVE_NOTIFY": "json://example.invalid/hook",
                                          "HTTP_PROXY": f"http://127.0.0.1:{endpoint}",
                                          "NO_PROXY": "", "no_proxy": ""})
    assert proxied.returncode == 0, proxied.stderr
    assert [m["path"] for m in Hook.received] == ["http://example.invalid/hook"]


def test_secrets_file_inside_the_run_directory_is_refused_on_resume(tmp_path: Path) -> None:
    pytest.importorskip("apprise")
    res = run(load_config(None, [*LOGISTIC, "rounds=1", f"output.dir={tmp_path}"]))
    assert res.run_dir is not None
    inside = res.run_dir / "urls.txt"
    inside.write_text("json://127.0.0.1:9/x\n")
    r = cli.invoke(app, ["run", "--resume", str(res.run_dir), "--set", "rounds=2",
                         "--set", f"notify.urls_file={inside}"])
    assert r.exit_code == 2 and "inside the run directory" in r.output


# ----------------------------------------------------------------------------- docs


@pytest.mark.slow
def test_the_extending_page_plugins_run_from_the_cli(tmp_path: Path) -> None:
    """The plugin files shown in docs/extending.md, as written there, from the CLI."""
    import numpy as np

    page = (REPO / "docs" / "extending.md").read_text()
    files = re.findall(r"<!-- file: (\S+) -->\n```python\n(.*?)```", page, re.DOTALL)
    assert [name for name, _ in files] == ["myplugin.py", "mydata.py"]
    for name, code in files:
        (tmp_path / name).write_text(code)
    (tmp_path / "data" / "my_arrays").mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "data" / "my_arrays" / "x.npy", rng.normal(size=(240, 12)).astype("f4"))
    np.save(tmp_path / "data" / "my_arrays" / "y.npy", rng.integers(0, 3, 240))
    proc = fedweave("run", "--import", "myplugin.py", "--import", "mydata.py",
                    *sets(["model.name=tiny_mlp", "algorithm.name=fedavg_smooth", "rounds=2",
                           "data.dataset=my_arrays", "data.root=./data", "data.nodes=3",
                           "output.plots=false"]), "--out", "runs", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((only_run(tmp_path / "runs") / "summary.json").read_text())
    assert summary["algorithm"] == "fedavg_smooth" and summary["rounds_done"] == 2


def test_configs_readme_lists_every_shipped_config() -> None:
    text = (REPO / "configs" / "README.md").read_text()
    for path in sorted((REPO / "configs").glob("*.yaml")):
        stem = path.name
        family = re.sub(r"-(admm|pdmm|cadmm|centralized|d2|dsgd|gossip|gradient).*", "",
                        path.stem)
        assert stem in text or f"{family}-<algorithm>.yaml" in text, stem


def _front_pages() -> list[Path]:
    """The README and every page of the documentation site (docs/**/*.md)."""
    pages = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    assert len(pages) > 20, pages
    return pages


def test_readme_and_docs_have_no_unfilled_placeholders() -> None:
    """Every table and figure is filled in: no line that is only an ALL-CAPS token."""
    for page in _front_pages():
        text = page.read_text()
        assert not re.findall(r"(?m)^[A-Z][A-Z0-9_]{4,}$", text), page


def test_readme_and_docs_cite_no_document_outside_the_repository() -> None:
    for page in _front_pages():
        text = page.read_text()
        assert not re.search(r"\b(DESIGN|REFERENCE) §", text), page
        assert not re.search(r"\b[Ss]eeds? 00\d", text), page  # "reference system 00N"
        for link in re.findall(r"\]\(([^)#]+)\)", text):
            if "://" not in link:
                assert (page.parent / link).exists(), f"{page}: {link}"


def test_readme_is_a_front_door_and_every_docs_page_is_in_the_site() -> None:
    """The README stays short; every page under docs/ is in mkdocs.yml's nav; the API
    reference's mkdocstrings directives all live in docs/api.md; the README's test command is
    the one .ci/run runs."""
    import yaml

    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    site = yaml.safe_load((REPO / "mkdocs.yml").read_text())

    def pages(nav: object) -> list[str]:
        if isinstance(nav, str):
            return [nav]
        if isinstance(nav, dict):
            return [p for v in nav.values() for p in pages(v)]
        if isinstance(nav, list):
            return [p for v in nav for p in pages(v)]
        return []

    in_nav = set(pages(site["nav"]))
    on_disk = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    assert on_disk == in_nav
    with_directives = {p for p in on_disk
                       if re.search(r"(?m)^::: fedweave", (REPO / "docs" / p).read_text())}
    assert with_directives == {"api.md"}
    assert "python3 -m pytest -q" in readme
    assert "python3 -m pytest -q" in (REPO / ".ci" / "run").read_text()


def test_configs_named_in_readme_and_docs_exist() -> None:
    """Every `configs/<file>.yaml` a page names (placeholders and globs aside) is shipped."""
    named = 0
    for page in _front_pages():
        for path in re.findall(r"(?<![\w/])configs/[\w./-]+\.(?:yaml|json)", page.read_text()):
            named += 1
            assert (REPO / path).exists(), f"{page}: {path}"
    assert named > 30
