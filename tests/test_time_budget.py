"""Reference system 002's comparisons: time to a target accuracy in summary.json, sweep.csv,
the sweep table and the report; runs that stop at the target (``output.stop_at_target``) or at
a simulated-time budget (``output.max_sim_s``), with the reason in summary.json."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedweave.cli import app
from fedweave.errors import UserError
from fedweave.runner import run
from tests.conftest import small_config

cli = CliRunner()
ASYNC = ["algorithm.name=fedasync", "clock.profile=prfl", "data.nodes=6",
         "train.local_steps=2", "engine.name=loop", "model.hidden=[16]"]


def _rows(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "metrics.csv").open()))


def test_stop_at_target_ends_the_run_at_the_first_evaluation_reaching_it(tmp_out: str) -> None:
    res = run(small_config("rounds=20", "train.lr=0.1", "output.target_acc=0.6",
                           "output.stop_at_target=true", tmp_out))
    s = res.summary
    assert s["stop_reason"] == "target_acc" and s["stopped_early"]
    accs = [h["test_acc"] for h in res.history]
    assert accs[-1] >= 0.6 > max(accs[:-1])          # stopped at the first hit, not later
    assert s["rounds_done"] == s["time_to_target"]["update"] == len(accs) < 20
    full = run(small_config("rounds=20", "train.lr=0.1", "output.target_acc=0.6"), write=False)
    assert full.summary["stop_reason"] == "rounds" and full.summary["rounds_done"] == 20
    assert full.summary["time_to_target"] == s["time_to_target"]  # the same hit, not stopped


def test_stop_at_target_without_a_target_is_refused() -> None:
    with pytest.raises(UserError, match=r"output\.target_acc"):
        small_config("output.stop_at_target=true")


def test_max_sim_s_stops_sync_and_async_runs_at_the_same_simulated_budget(tmp_out: str) -> None:
    budget = 0.25  # one FedAvg round is 0.29 simulated s here; ~20 FedAsync updates
    for algo in (["algorithm.name=fedavg", "clock.profile=prfl", "data.nodes=6"], ASYNC):
        res = run(small_config("rounds=200", "output.eval_every=4", f"output.max_sim_s={budget}",
                               *algo, tmp_out))
        s = res.summary
        assert s["stop_reason"] == "max_sim_s" and s["stopped_early"], algo
        times = [float(r["value"]) for r in _rows(res.run_dir)
                 if r["split"] == "round" and r["metric"] == "sim_s"]
        assert sum(times[:-1]) < budget <= sum(times) == pytest.approx(s["sim_time_s"])
        # the round that spent the budget is evaluated although it is off eval_every
        assert s["final"]["round"] == s["rounds_done"] == len(times) < 200


def test_sweep_csv_and_table_show_time_to_target(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rounds: 4\nmodel: {name: mlp, hidden: [32]}\ndata: {nodes: 4}\n"
                   "clock: {profile: prfl}\n"
                   "output: {plots: false, target_acc: 0.5, progress: false}\n")
    out = tmp_path / "sweep"
    res = cli.invoke(app, ["sweep", str(cfg), "--grid", "train.lr=0.1,0.0001", "--out",
                           str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["train.lr"]: r for r in csv.DictReader((out / "sweep.csv").open())}
    fast, stuck = rows["0.1"], rows["0.0001"]
    assert float(fast["target_acc"]) == 0.5 and stuck["ttt_sim_s"] == ""
    assert float(fast["ttt_sim_s"]) > 0 and 1 <= int(fast["ttt_round"]) <= 4
    assert fast["stop_reason"] == "rounds" and fast["headline_metric"] == "test_acc"
    assert float(fast["headline_acc"]) == float(fast["final_test_acc"])
    assert f"target at {float(fast['ttt_sim_s']):.1f} sim s (round {fast['ttt_round']})" \
        in res.output and "target not reached" in res.output
    assert "time to target" in res.output and "1/1" in res.output and "0/1" in res.output
    from fedweave.records.report import write_report

    page = write_report([out], tmp_path / "rep", formats=("png",)).read_text()
    assert f"{float(fast['ttt_sim_s']):.1f} s (1/1 reached)" in page
    assert "not reached (0/1)" in page
