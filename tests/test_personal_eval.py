"""Personalised evaluation: each client's own test split, its own model, the spread."""

from __future__ import annotations

import csv

import torch

from fedweave.context import build_context
from fedweave.evaluation import personal_test
from fedweave.records.restore import metric_rows
from fedweave.runner import build_algorithm, run
from tests.conftest import small_config

PERSONAL = ["data.client_test_fraction=0.2", "data.nodes=6"]


def test_client_test_split_is_disjoint_seeded_and_off_by_default():
    ctx = build_context(small_config(*PERSONAL))
    data = ctx.data
    assert len(data.test_idx) == 6
    for i in range(6):
        test, train, val = (set(t.tolist()) for t in
                            (data.test_idx[i], data.train_idx[i], data.val_idx[i]))
        assert test and not test & train and not test & val
    again = build_context(small_config(*PERSONAL)).data
    assert all(torch.equal(a, b) for a, b in zip(data.test_idx, again.test_idx, strict=True))
    other = build_context(small_config(*PERSONAL, "seed=1")).data
    assert not all(torch.equal(a, b) for a, b in zip(data.test_idx, other.test_idx,
                                                     strict=True))
    plain = build_context(small_config("data.nodes=6")).data
    assert plain.test_idx == []
    # the client test split comes out of the partition: train + val + test = the shard
    assert sum(map(len, plain.train_idx)) + sum(map(len, plain.val_idx)) == \
        sum(map(len, data.train_idx)) + sum(map(len, data.val_idx)) + \
        sum(map(len, data.test_idx))


def test_global_model_personal_accuracy_pools_the_clients_test_splits():
    ctx = build_context(small_config(*PERSONAL))
    algo = build_algorithm(ctx)
    algo.round(0)
    out = personal_test(algo)
    assert out is not None
    idx = torch.cat(ctx.data.test_idx)
    params, buffers, _ = algo.models()
    loss, correct = ctx.engine.evaluate_sums(params, buffers, *ctx.data.take(idx))
    assert abs(out["acc"] - float(correct[0]) / len(idx)) < 1e-9
    assert abs(out["loss"] - float(loss[0]) / len(idx)) < 1e-4
    per = []
    for t in ctx.data.test_idx:
        per.append(float(ctx.engine.evaluate_sums(params, buffers, *ctx.data.take(t))[1][0])
                   / len(t))
    assert abs(out["acc_min"] - min(per)) < 1e-9 and abs(out["acc_max"] - max(per)) < 1e-9
    std = torch.tensor(per, dtype=torch.float64).std(correction=0)
    assert abs(out["acc_std"] - float(std)) < 1e-9


def test_finetuning_changes_the_personal_models_and_needs_no_state():
    ctx = build_context(small_config(*PERSONAL))
    algo = build_algorithm(ctx)
    algo.round(0)
    before = algo.models()[0].clone()
    plain, tuned = personal_test(algo), personal_test(algo, finetune_steps=5, key=3)
    assert plain is not None and tuned is not None
    assert tuned["acc"] != plain["acc"]
    assert torch.equal(algo.models()[0], before)  # the global model is untouched
    assert personal_test(algo, finetune_steps=5, key=3) == tuned  # deterministic


def test_summary_and_metrics_carry_the_personal_test(tmp_out):
    res = run(small_config(tmp_out, *PERSONAL, "output.finetune_steps=2"))
    final = res.summary["final"]
    assert final["personal_test_acc_min"] <= final["personal_test_acc"] <= \
        final["personal_test_acc_max"]
    assert final["personal_test_acc_std"] >= 0
    assert res.run_dir is not None
    with open(res.run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "personal_test"]
    assert {r["metric"] for r in rows} == {"acc", "acc_min", "acc_max", "acc_std", "loss"}
    last = {r["metric"]: float(r["value"]) for r in rows if r["round"] == "3"}
    assert last["acc"] == final["personal_test_acc"]
    # the rows a damaged metrics.csv is rebuilt with (records.restore) are the same
    rebuilt = [r for r in metric_rows(res.history, [], "global") if r[2] == "personal_test"]
    assert [(str(r[0]), r[3], float(r[4])) for r in rebuilt] == \
        [(r["round"], r["metric"], float(r["value"])) for r in rows]


def test_local_training_is_evaluated_per_client():
    ctx = build_context(small_config(*PERSONAL, "algorithm.name=local", "rounds=1"))
    algo = build_algorithm(ctx)
    algo.round(0)
    out = personal_test(algo)
    assert out is not None
    params, buffers, _ = algo.models()
    t = ctx.data.test_idx[2]
    hits = ctx.engine.evaluate_sums(params[2:3], {k: v[2:3] for k, v in buffers.items()},
                                    *ctx.data.take(t))[1]
    accs = []
    for i, t in enumerate(ctx.data.test_idx):
        accs.append(float(ctx.engine.evaluate_sums(
            params[i:i + 1], {k: v[i:i + 1] for k, v in buffers.items()},
            *ctx.data.take(t))[1][0]) / len(t))
    assert float(hits[0]) / len(ctx.data.test_idx[2]) == accs[2]
    assert abs(out["acc_max"] - max(accs)) < 1e-9


def test_sweep_rows_and_points_carry_the_personal_test():
    from fedweave.workflows.sweep import Outcome, Point, csv_rows, grouped

    config = small_config()
    outcomes = [Outcome(Point("algorithm=ditto", {"algorithm.name": "ditto"}, seed, [],
                              f"d{seed}", config), "finished",
                        {"final": {"test_acc": 0.5, "personal_test_acc": acc}})
                for seed, acc in ((0, 0.8), (1, 0.6))]
    rows = csv_rows(outcomes, ["algorithm.name"])
    assert [r["final_personal_test_acc"] for r in rows] == [0.8, 0.6]
    mean, std = grouped(rows)[0]["final_personal_test_acc"]
    assert abs(mean - 0.7) < 1e-12 and abs(std - 0.1414213562) < 1e-9
