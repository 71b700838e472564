"""Clustered FedAvg from its user's side (reference system 004): a divergence is FedAvg's one
line, cluster membership per round is in clusters.csv, and the headline accuracy is the
per-client one (each client's cluster model on its own validation split), labelled."""

from __future__ import annotations

import csv
from pathlib import Path

from fedweave.runner import run
from tests.conftest import small_config
from tests.trust_cli import FAST, assert_one_line_error, fedweave, run_dirs

CLUSTERED = ["algorithm.name=clustered", "algorithm.k=3", "data.nodes=8",
             "data.partition=dirichlet", "data.alpha=0.05", "data.min_samples=10"]


def test_clustered_divergence_is_fedavgs_one_line(tmp_path: Path) -> None:
    sets = [a for kv in CLUSTERED for a in ("--set", kv)]
    out = tmp_path / "runs"
    proc = fedweave("run", *FAST, *sets, "--set", "model.name=mlp", "--set", "train.lr=1e12",
                    "--out", str(out), cwd=tmp_path)
    (run_dir,) = run_dirs(out)
    assert_one_line_error(proc, "training diverged", "in round 1:", "lower train.lr",
                          str(run_dir))
    assert "NaN" not in proc.stderr.replace("NaN/inf", "")   # no scikit-learn message


def test_clusters_csv_records_membership_per_round_and_survives_a_resume(tmp_path: Path
                                                                         ) -> None:
    res = run(small_config(*CLUSTERED, "rounds=3", f"output.dir={tmp_path}"))
    assert res.run_dir is not None and res.algorithm is not None
    rows = list(csv.DictReader((res.run_dir / "clusters.csv").open()))
    assert [int(r["round"]) for r in rows] == [r for r in (1, 2, 3) for _ in range(8)]
    last = {int(r["client"]): int(r["cluster"]) for r in rows if r["round"] == "3"}
    assert last == dict(enumerate(res.algorithm.assign.tolist()))
    assert len(set(last.values())) > 1 and set(last.values()) <= {0, 1, 2}
    # a run of 2 rounds killed after writing round 3's rows but before its checkpoint: the
    # resume drops them and writes round 3 once, as the uninterrupted run did
    short = run(small_config(*CLUSTERED, "rounds=2", f"output.dir={tmp_path / 'short'}"))
    assert short.run_dir is not None
    with open(short.run_dir / "clusters.csv", "a") as f:
        f.write("3,0,2\n3,1,2\n")
    again = run(resume=short.run_dir, overrides=["rounds=3"])
    assert again.summary["rounds_done"] == 3
    assert list(csv.DictReader((short.run_dir / "clusters.csv").open())) == rows


def test_headline_of_a_clustered_run_is_the_per_client_accuracy(tmp_path: Path) -> None:
    res = run(small_config(*CLUSTERED, "rounds=2", f"output.dir={tmp_path}"))
    final, head = res.summary["final"], res.summary["headline"]
    assert head["metric"] == "clients_val_acc_mean" and "per-client" in head["label"]
    assert head["value"] == final["clients_val_acc_mean"] != final["test_acc"]
    fed = run(small_config("rounds=1"), write=False).summary["headline"]
    assert fed["metric"] == "test_acc" and fed["label"] == "test accuracy"
    from fedweave.cli.progress import round_line
    from fedweave.records.report import write_report

    line = round_line(res.history[-1], 2, 0.1, 0.0, res.algorithm.headline)  # type: ignore[union-attr]
    assert line.startswith(f"round 2/2  per-client accuracy (val, own cluster model) "
                           f"{head['value']:.4f}")
    page = write_report([res.run_dir], tmp_path / "rep").read_text()  # type: ignore[list-item]
    assert f"{head['value']:.4f}" in page and "per-client accuracy" in page
