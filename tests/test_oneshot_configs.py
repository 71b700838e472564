"""The shipped one-shot configs are seed 003's experiments (CIFAR-10, GPU-sized) and the
CPU-sized Fashion-MNIST ones."""

from __future__ import annotations

from pathlib import Path

from fedweave.plugins import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

#: config → (shards, unif, student shards, sampling, preset, initial batches, new per epoch)
SEED = {
    "oneshot-cifar10-1teacher": (1, None, 0, 0, "custom", 50, 2),
    "oneshot-cifar10-half": (2, 0.0, 1, 0, "custom_more_iterations", 25, 1),
    "oneshot-cifar10-half-weighted": (2, 0.0, 1, 0, "custom", 25, 1),
    "oneshot-cifar10-iid10": (10, 1.0, 0, 0, "custom", 50, 2),
    "oneshot-cifar10-iid10-sampling3": (10, 1.0, 0, 3, "custom", 50, 2),
    "oneshot-cifar10-iid10-sampling5": (10, 1.0, 0, 5, "custom", 50, 2),
    "oneshot-cifar10-heterogeneous10": (10, 0.5, 0, 3, "custom", 50, 2),
    "oneshot-cifar10-disjoint2": (2, 0.0, 0, 0, "custom", 50, 2),
    "oneshot-cifar10-disjoint5": (5, 0.0, 0, 0, "custom", 50, 2),
}


def test_cifar10_configs_are_the_seeds_experiments() -> None:
    assert {p.stem for p in CONFIGS.glob("oneshot-cifar10-*.yaml")} == set(SEED)
    for name, (nodes, unif, held, sampling, preset, initial, new) in SEED.items():
        cfg = load_config(CONFIGS / f"{name}.yaml")
        d, s, st = cfg.data, cfg.distill.synthesis, cfg.distill.student
        assert (cfg.algorithm.name, cfg.rounds, cfg.seed) == ("local", 300, 42)
        assert (d.dataset, d.nodes, d.augment) == ("cifar10", nodes, True)
        if unif is not None:
            assert (d.partition, d.unif) == ("heterogeneous", unif)
        assert (cfg.model.name, cfg.model.norm) == ("resnet18", "batch")
        t = cfg.train
        assert (t.lr, t.momentum, t.weight_decay, t.batch_size) == (0.1, 0.9, 5e-4, 256)
        assert (t.scheduler, t.milestones, t.gamma) == ("multistep", [150, 250], 0.1)
        assert cfg.distill.student_shards == held
        assert (s.preset, s.batch_size, s.initial_batches, s.sampling) == (
            preset, 256, initial, sampling)
        assert (st.epochs, st.steps_per_epoch, st.batch_size, st.lr, st.milestones) == (
            300, 195, 256, 0.1, [150, 250])
        assert (st.loss, st.adaptive, st.new_batches_per_epoch) == ("ce", True, new)
        weighted = name.endswith("weighted")
        assert (st.class_weights == [10.0] * 5 + [1.0] * 5) if weighted else (
            st.class_weights is None)


def test_fashion_mnist_configs_are_cpu_sized() -> None:
    names = {p.stem for p in CONFIGS.glob("oneshot-fmnist*.yaml")}
    assert {"oneshot-fmnist", "oneshot-fmnist-1teacher"} <= names
    main = load_config(CONFIGS / "oneshot-fmnist.yaml")
    assert (main.data.dataset, main.data.nodes, main.data.unif) == ("fashion-mnist", 5, 1.0)
    for name in names:
        cfg = load_config(CONFIGS / f"{name}.yaml")
        assert cfg.model.norm == "batch" and cfg.data.dataset == "fashion-mnist"
        assert cfg.distill.synthesis.batch_size * cfg.distill.synthesis.initial_batches <= 5120
