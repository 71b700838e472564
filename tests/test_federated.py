"""Federated algorithms: equalities between algorithms and behaviour on non-IID data."""

import pytest
import torch

from fedweave.runner import run
from tests.conftest import small_config


def final_params(*overrides):
    res = run(small_config(*overrides), write=False)
    params, _, _ = res.algorithm.models()
    return params, res


def test_fedavg_one_client_one_step_equals_centralized_sgd():
    common = ["data.nodes=1", "data.partition=iid", "train.local_steps=1", "rounds=6",
              "train.momentum=0.9"]
    fed, _ = final_params(*common, "algorithm.name=fedavg")
    cen, _ = final_params(*common, "algorithm.name=centralized")
    assert torch.allclose(fed, cen, atol=1e-6)
    start, _ = final_params(*common, "algorithm.name=centralized", "rounds=1")
    assert not torch.allclose(start, cen)  # the comparison is not vacuous


def test_fedprox_mu_zero_equals_fedavg_and_mu_changes_it():
    avg, _ = final_params("algorithm.name=fedavg")
    prox0, _ = final_params("algorithm.name=fedprox", "algorithm.prox_mu=0")
    prox, _ = final_params("algorithm.name=fedprox", "algorithm.prox_mu=1.0")
    assert torch.equal(avg, prox0)
    assert not torch.allclose(avg, prox, atol=1e-4)


def test_fedprox_pulls_clients_towards_the_global_model():
    """With a huge μ the local models barely move: the global model changes less per round."""
    init, _ = final_params("rounds=1", "train.lr=0.1", "algorithm.prox_mu=0")
    strong, _ = final_params("rounds=1", "train.lr=0.1", "algorithm.name=fedprox",
                             "algorithm.prox_mu=5.0")
    run0 = run(small_config("rounds=1"), write=False).algorithm
    x0 = run0.ctx.init_params
    assert (strong - x0).norm() < 0.6 * (init - x0).norm()


def test_clustered_with_one_cluster_is_sample_weighted_fedavg():
    """k = 1: the cluster model is Σ n_i x_i / Σ n_i (the seed weighted by the first client's
    share instead; with unequal shards that differs)."""
    skew = ["data.partition=quantity", "data.sigma=1.5"]
    avg, _ = final_params(*skew, "algorithm.name=fedavg")
    clu, _ = final_params(*skew, "algorithm.name=clustered", "algorithm.k=1")
    assert torch.allclose(avg, clu[0:1], atol=1e-6)


def test_clustered_finds_clusters_and_reports_each():
    res = run(small_config("algorithm.name=clustered", "algorithm.k=2", "data.nodes=6",
                           "rounds=2"), write=False)
    params, _, labels = res.algorithm.models()
    assert labels == ["cluster0", "cluster1"] and params.shape[0] == 2
    assert res.history[-1]["clusters_used"] == 2
    assert "test_acc_min" in res.summary["final"]


@pytest.mark.parametrize("opt", ["momentum", "adam", "yogi", "adagrad"])
def test_server_optimizers_learn(opt):
    lr = {"momentum": 1.0, "adam": 0.01, "yogi": 0.01, "adagrad": 0.05}[opt]
    res = run(small_config("rounds=8", f"algorithm.server_optimizer={opt}",
                           f"algorithm.server_lr={lr}"), write=False)
    assert res.summary["final"]["test_acc"] > 0.8, res.summary["final"]


def test_cohort_is_a_function_of_seed_and_round_only():
    from fedweave.algorithms.federated.sampling import sample_cohort
    a = sample_cohort(0, 5, 100, 10)
    assert torch.equal(a, sample_cohort(0, 5, 100, 10))
    assert not torch.equal(a, sample_cohort(0, 6, 100, 10))
    assert len(a.unique()) == 10


def test_scaffold_beats_fedavg_on_strongly_non_iid_synthetic():
    """FedProx's Synthetic(1,1), natural device split, many local steps: client drift hurts
    FedAvg; SCAFFOLD's control variates correct it (lower global training loss)."""
    common = ["data.dataset=synthetic", "data.partition=natural", "data.nodes=10",
              "model.name=logistic", "train.local_steps=25", "train.lr=0.05",
              "train.batch_size=20", "rounds=25", "data.synthetic.samples_mean=5.0",
              "data.synthetic.samples_sigma=0.5", "data.val_fraction=0.0"]
    avg = run(small_config(*common, "algorithm.name=fedavg"), write=False)
    sca = run(small_config(*common, "algorithm.name=scaffold"), write=False)
    fa, fs = avg.summary["final"], sca.summary["final"]
    assert fs["test_loss"] < fa["test_loss"] - 0.05, (fa, fs)
    assert fs["test_acc"] >= fa["test_acc"], (fa, fs)
