"""Every shipped config in configs/ loads and validates; the seed 001 / ECL-ISVR ones say what
their comments promise."""

from pathlib import Path

import pytest

from fedweave.config import load_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_loads(path):
    cfg = load_config(path)
    assert cfg.rounds >= 1


def test_seed001_configs_reproduce_the_quickstart():
    seed = [p for p in CONFIGS if p.name.startswith("seed001-ring3-")]
    names = {load_config(p).algorithm.name for p in seed}
    assert {"dsgd", "gossip", "admm_sgd", "pdmm_sgd", "pdmm_isvr", "admm_isvr",
            "cadmm", "centralized"} <= names
    for p in seed:
        cfg = load_config(p)
        assert (cfg.data.dataset, cfg.data.nodes, cfg.data.train_samples) == ("cifar10", 3, 10000)
        assert (cfg.model.name, cfg.model.group_channels) == ("resnet50", 32)
        assert (cfg.model.dropout, cfg.model.last_dropout) == (0.1, 0.5)
        assert (cfg.train.lr, cfg.train.batch_size, cfg.train.l2_lambda) == (0.002, 100, 0.01)
        assert (cfg.train.scheduler, cfg.train.gamma, cfg.rounds) == ("step", 0.9, 200)
        if cfg.algorithm.name != "centralized":
            assert cfg.topology.name == "ring" and cfg.clock.asynchronous


def test_ecl_isvr_configs_are_the_paper_setting():
    """Reference system 001's ECL-ISVR logistic/Fashion-MNIST runs (nttcslab/ecl-isvr)."""
    ecl = [p for p in CONFIGS if p.name.startswith("ecl-isvr-")]
    names = {load_config(p).algorithm.name for p in ecl}
    assert {"centralized", "dsgd", "pdmm_isvr", "admm_isvr"} <= names
    for p in ecl:
        cfg = load_config(p)
        d, t = cfg.data, cfg.train
        assert (d.dataset, d.nodes, d.partition, d.classes_per_node) == (
            "fashion-mnist", 8, "classes", 8)
        assert (d.class_order, d.class_shift, d.class_share_low) == (
            [7, 8, 2, 6, 4, 5, 1, 3, 0, 9], 4, 0.8)
        assert not d.normalize and cfg.model.name == "logistic" and cfg.rounds == 350
        assert (t.lr, t.batch_size, t.l2_lambda, t.momentum, t.scheduler) == (
            0.002, 100, 0.01, 0.0, "none")
        a = cfg.algorithm
        if a.name == "centralized":
            assert t.epoch_samples == 12800  # the reference's single-node default
            continue
        assert t.epoch_samples == 10000
        assert cfg.topology.name == "edges"
        assert cfg.topology.file == Path("configs/topologies/node_list.n8.random.round8.json")
        if a.name in ("dsgd", "pdmm_isvr", "admm_isvr", "pdmm_sgd", "admm_sgd"):
            assert cfg.topology.mixing == "uniform"
            assert (a.exchange_period, a.offsets, a.exchange) == (8, "file", "two_way")
        if a.name == "dsgd":
            assert a.epoch_swap
        if a.name in ("pdmm_isvr", "admm_isvr"):
            assert (a.piw, a.use_gcoef) == (1.0, False)
