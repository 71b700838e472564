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
    for p in (p for p in CONFIGS if p.name.startswith("ecl-isvr-")):
        cfg = load_config(p)
        assert (cfg.data.nodes, cfg.data.partition, cfg.data.classes_per_node) == (8, "classes", 8)
        assert cfg.data.val_from_train and cfg.data.dataset == "fashion-mnist"
        assert cfg.model.name == "logistic"
        assert cfg.algorithm.name == "centralized" or cfg.topology.name == "random_regular"
