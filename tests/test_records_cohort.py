"""Records cost what the cohort costs: a federated run writes one clients.csv (round, client,
metrics; one append per round) instead of one file per client, validates the clients
``output.client_eval`` picks (the cohort by default), and a round touches no sample of a client
outside its cohort. A killed and resumed run writes the same clients.csv as an uninterrupted
one."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from fedweave.callbacks import Callback
from fedweave.cli import app
from fedweave.runner import Runner, run
from tests.conftest import small_config

BASE = ["model.name=logistic", "data.nodes=12", "data.partition=iid",
        "algorithm.clients_per_round=3", "rounds=3", "data.val_fraction=0.2"]


def rows_of(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cohorts(path: Path) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for r in rows_of(path):
        if r["train_loss"]:
            out.setdefault(int(r["round"]), set()).add(int(r["client"]))
    return out


def evaluated(path: Path) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for r in rows_of(path):
        if r["val_acc"]:
            out.setdefault(int(r["round"]), set()).add(int(r["client"]))
    return out


def test_one_table_per_run_with_the_cohort_validated(tmp_path: Path) -> None:
    res = run(small_config(*BASE, f"output.dir={tmp_path}"))
    d = res.run_dir
    assert d is not None
    assert sorted(p.name for p in (d / "nodes").iterdir()) == ["global.csv"]
    table = d / "clients.csv"
    assert table.read_text().splitlines()[0] == \
        "round,client,train_loss,train_acc,val_loss,val_acc"
    trained, checked = cohorts(table), evaluated(table)
    assert sorted(trained) == [1, 2, 3] and all(len(c) == 3 for c in trained.values())
    assert checked == trained  # cohort: the clients trained that round, no one else
    assert len(rows_of(table)) == 9
    final = res.summary["final"]
    assert final["clients_val_n"] == 3
    last = [float(r["val_acc"]) for r in rows_of(table) if r["round"] == "3"]
    assert final["clients_val_acc_min"] == min(last)
    assert final["clients_val_acc_max"] == max(last)


@pytest.mark.parametrize("mode", ["all", "never"])
def test_client_eval_all_and_never(tmp_path: Path, mode: str) -> None:
    res = run(small_config(*BASE, f"output.client_eval={mode}", f"output.dir={tmp_path}"))
    assert res.run_dir is not None
    table = res.run_dir / "clients.csv"
    checked = evaluated(table)
    if mode == "all":
        assert checked == {r: set(range(12)) for r in (1, 2, 3)}
        assert res.summary["final"]["clients_val_n"] == 12
    else:
        assert checked == {}
        assert len(rows_of(table)) == 9  # the cohorts' training rows only
        assert not any(k.startswith("clients_val") for k in res.summary["final"])


def test_cohort_global_validation_pools_the_cohort_all_pools_everyone(tmp_path: Path) -> None:
    """val_* of the global model: the cohort's pooled validation samples (cohort), the same
    model on every client's (all); test_* and training are the same either way."""
    cohort = run(small_config(*BASE), write=False)
    every = run(small_config(*BASE, "output.client_eval=all"), write=False)
    for a, b in zip(cohort.history, every.history, strict=True):
        assert a["test_acc"] == b["test_acc"] and a["train_loss"] == b["train_loss"]
    assert cohort.algorithm is not None
    data = cohort.algorithm.ctx.data
    assert [h["val_acc"] for h in every.history] != [h["val_acc"] for h in cohort.history]
    assert len(data.union_val()) > 0


class Touched(Callback):
    """Which clients' samples a round reads (training and evaluation), by round."""

    def __init__(self, runner: Runner) -> None:
        data = runner.ctx.data
        owner = torch.full((len(data.y),), -1, dtype=torch.int64)
        for c, (t, v) in enumerate(zip(data.train_idx, data.val_idx, strict=True)):
            owner[t], owner[v] = c, c
        self.owner, self.rounds, self.current = owner, {}, set()  # type: ignore[var-annotated]
        take, take_inputs = data.take, data.take_inputs  # every read of samples

        def spy(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.current.update(self.owner[idx.reshape(-1).cpu()].unique().tolist())
            return take(idx)

        def spy_inputs(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.current.update(self.owner[idx.reshape(-1).cpu()].unique().tolist())
            return take_inputs(idx)

        data.take = spy  # type: ignore[method-assign]
        data.take_inputs = spy_inputs  # type: ignore[method-assign]

    def should_stop(self, runner: Any) -> bool:
        self.rounds[len(self.rounds) + 1] = self.current
        self.current = set()
        return False


@pytest.mark.parametrize("mode", ["cohort", "all"])
def test_a_round_touches_only_its_cohort(mode: str) -> None:
    cfg = small_config(*BASE, "data.nodes=40", f"output.client_eval={mode}")
    runner = Runner(cfg, None)
    spy = Touched(runner)
    runner.callbacks.append(spy)
    runner.run()
    assert sorted(spy.rounds) == [1, 2, 3]
    for members in spy.rounds.values():
        assert len(members) == (3 if mode == "cohort" else 40)


class KillAfterRecords(Callback):
    """Dies after round ``at`` wrote its records, before its checkpoint."""

    def __init__(self, at: int) -> None:
        self.at = at

    def should_stop(self, runner: Any) -> bool:
        if runner.history and runner.history[-1]["round"] == self.at:
            raise KeyboardInterrupt
        return False


def test_killed_and_resumed_run_writes_the_same_clients_csv(tmp_path: Path) -> None:
    cfg = [*BASE, "rounds=4", "output.eval_every=2"]
    full = run(small_config(*cfg, f"output.dir={tmp_path / 'full'}"))
    with pytest.raises(KeyboardInterrupt):
        run(small_config(*cfg, f"output.dir={tmp_path / 'killed'}"),
            callbacks=[KillAfterRecords(at=2)])
    (killed,) = (tmp_path / "killed").iterdir()
    assert {r["round"] for r in rows_of(killed / "clients.csv")} == {"1", "2"}
    # round 2's rows were written before the crash, its checkpoint was not: the resume
    # starts from round 1's and must not write round 2's rows twice
    resumed = run(resume=killed)
    assert full.run_dir is not None and resumed.run_dir is not None
    assert (resumed.run_dir / "clients.csv").read_text() == \
        (full.run_dir / "clients.csv").read_text()
    assert [h["val_acc"] for h in resumed.history] == [h["val_acc"] for h in full.history]


def test_export_per_client_splits_the_table(tmp_path: Path) -> None:
    res = run(small_config(*BASE, f"output.dir={tmp_path}"))
    assert res.run_dir is not None
    out = tmp_path / "per-client"
    done = CliRunner().invoke(app, ["export", str(res.run_dir), "--per-client", str(out)])
    assert done.exit_code == 0, done.output
    table = rows_of(res.run_dir / "clients.csv")
    files = sorted(out.glob("*.csv"), key=lambda p: int(p.stem))
    assert [int(p.stem) for p in files] == sorted({int(r["client"]) for r in table})
    for path in files:
        rows = rows_of(path)
        mine = [r for r in table if r["client"] == path.stem]
        assert list(rows[0]) == ["epoch", "train_loss", "val_loss", "test_loss", "train_acc",
                                 "val_acc", "test_acc"]
        assert [(r["epoch"], r["val_acc"]) for r in rows] == \
            [(r["round"], r["val_acc"]) for r in mine]
