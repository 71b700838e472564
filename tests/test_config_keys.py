"""Every config key acts or is refused: walk the whole tree (every registered algorithm's keys
included), change each key in a context where it matters and assert the run changes — or the
key is marked informational in its field description, or the config is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import pytest
import torch
from pydantic import BaseModel

from fedweave.config import ALGORITHM_CONFIGS, Config
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.runner import run

BASE = ["rounds=2", "data.nodes=4", "model.name=logistic", "output.plots=false",
        "output.progress=false", "engine.name=loop", "data.partition=iid"]
DEC = ["algorithm.name=dsgd", "topology.name=ring"]
SYNTHETIC = ["data.dataset=synthetic", "data.partition=natural"]
NODE_LIST = Path(__file__).resolve().parents[1] / "configs" / "topologies" / \
    "node_list.n8.random.round8.json"
PRFL = ["model.name=mlp", "model.hidden=[16]", "algorithm.densities=[1,0.5,0.3,0.1]"]
STALE = ["algorithm.window_s=0", "clock.speeds=[1,0.5,0.3,0.2]", "rounds=5"]

#: key → (context overrides, new value); keys not listed get an automatic new value in BASE
CONTEXT: dict[str, tuple[list[str], Any]] = {
    "name": ([], None),  # the run directory's name: test_output_keys_act
    "plugins": ([], None),  # tested in test_simcore (a plugin registers what a run uses)
    "data.dataset": ([], "synthetic"),
    "data.partition": ([], "quantity"),
    "data.root": ([], None),  # where files are read: tested in test_sources
    "data.download": ([], None),  # tested in test_download
    "data.alpha": (["data.partition=dirichlet"], 0.1),
    "data.min_samples": (["data.partition=quantity", "data.sigma=3"], 40),
    "data.shards_per_node": (["data.partition=shards"], 3),
    "data.user_fraction": (["data.dataset=synthetic"], 0.5),
    "data.user_min_samples": (["data.dataset=synthetic"], 50),
    "data.classes_per_node": (["data.partition=classes", "data.classes_per_node=5"], 3),
    "data.class_share_low": (["data.partition=classes", "data.classes_per_node=4"], 0.2),
    "data.class_order": (["data.partition=classes", "data.classes_per_node=3"], "shuffled"),
    "data.class_shift": (["data.partition=classes", "data.classes_per_node=3"], 2),
    "data.sigma": (["data.partition=quantity"], 2.0),
    "data.unif": (["data.partition=heterogeneous", "data.nodes=4"], 0.1),
    "data.val_from_train": ([], True),
    "data.train_samples": ([], 500),
    "data.test_samples": ([], 100),
    "data.augment": (["model.name=cnn"], True),
    "data.label_noise": ([], 0.2),
    "data.noisy_nodes": (["data.label_noise=0.3"], [0]),
    "data.input_noise": ([], 10.0),
    "data.prune.scores": ([], None),  # a scores.csv of this partition: test_influence_pipeline
    "data.prune.ratio": ([], None),  # needs data.prune.scores: test_influence_pipeline
    "data.prune.keep": ([], None),  # needs data.prune.scores: test_influence_pipeline
    "data.prune.balance": ([], None),  # needs data.prune.scores: test_prune_balance
    "model.name": ([], "mlp"),
    "model.norm": (["model.name=cnn"], "none"),
    "model.width": (["model.name=cnn"], 0.5),
    "model.group_channels": (["model.name=cnn"], 8),
    "model.dropout": (["model.name=cnn"], 0.3),
    "model.last_dropout": (["model.name=mlp"], 0.3),
    "model.hidden": (["model.name=mlp"], [16]),
    "model.stem": (["model.name=resnet32", "model.width=0.25", "rounds=1", "data.nodes=2",
                    "data.train_samples=64", "data.test_samples=32"], "imagenet"),
    "train.momentum": ([], 0.9),
    "train.nesterov": (["train.momentum=0.9"], True),
    "train.local_steps": ([], 3),
    "train.epoch_samples": ([], 200),
    "train.step_size": (["train.scheduler=step", "train.gamma=0.5"], 2),
    "train.gamma": (["train.scheduler=step", "train.step_size=1"], 0.5),
    "train.scheduler": (["train.gamma=0.5", "train.step_size=1"], "step"),
    "train.milestones": (["train.scheduler=multistep", "train.gamma=0.5"], [1]),
    "topology.name": (DEC, "complete"),
    "topology.mixing": ([*DEC, "topology.name=star", "data.nodes=5"], "uniform"),
    "topology.degree": ([*DEC, "topology.name=random_regular", "data.nodes=6"], 4),
    "topology.p": ([*DEC, "topology.name=erdos_renyi", "data.nodes=6"], 0.9),
    "topology.edges": ([*DEC, "topology.name=edges", "topology.edges=[[0,1],[1,2],[2,3],[3,0]]"],
                       [[0, 1], [1, 2], [2, 3]]),
    "topology.file": ([], None),  # an edge file: tested in test_topology
    "topology.hosts": ([], None),  # reference system 001's hosts.json: test_topology
    "clock.asynchronous": ([*DEC, "clock.speed_sigma=0.5"], True),
    "clock.seconds_per_sample": ([], 0.01),
    "clock.speed_sigma": ([], 0.5),
    "clock.speeds": ([], [0.5, 1.0, 1.0, 1.0]),
    "clock.trace": ([], None),  # a trace file: tested in test_clock
    "clock.bandwidth_up": ([], 1e5),
    "clock.bandwidth_down": ([], 1e5),
    "clock.latency_s": ([], 0.5),
    "clock.client_dropout": ([], 0.5),
    "clock.link_drop": ([*DEC, "topology.name=complete"], 0.5),
    "clock.swap_timeout": ([*DEC, "clock.bandwidth_up=1e3"], 1.0),
    "clock.train_fraction": ([*DEC, "clock.asynchronous=true"], 0.5),
    "clock.phase": ([*DEC, "clock.asynchronous=true", "clock.train_fraction=0.5"], "random"),
    "clock.latency_jitter": ([*DEC, "clock.asynchronous=true", "clock.latency_s=0.01"], 0.2),
    "clock.deadline_s": (["clock.speeds=[1,1,1,0.05]"], 1.0),
    "clock.message_corruption": ([], 0.5),
    "clock.corrupt_nodes": (["clock.message_corruption=0.7"], [0]),
    "clock.node_crash": (DEC, 0.4),
    "clock.crash_rounds": ([*DEC, "rounds=3", "clock.node_crash=0.4"], 2),
    "attack.name": (["attack.name=gaussian", "attack.fraction=0.5"], "sign_flip"),
    "attack.fraction": (["attack.name=sign_flip", "attack.fraction=0.25"], 0.5),
    "attack.nodes": (["attack.name=sign_flip", "attack.nodes=[0]"], [1]),
    "attack.std": (["attack.name=gaussian", "attack.fraction=0.5"], 10.0),
    "attack.scale": (["attack.name=sign_flip", "attack.fraction=0.5"], 2.0),
    "attack.z": (["attack.name=alie", "attack.fraction=0.5"], 1.5),
    "attack.label_fraction": (["attack.name=noisy_labels", "attack.fraction=0.5"], 0.9),
    "privacy.level": (["privacy.level=client"], "sample"),
    "privacy.clip": (["privacy.level=client"], 0.1),
    "privacy.noise_multiplier": (["privacy.level=client"], 0.5),
    "privacy.sampling": (["privacy.level=client", "algorithm.clients_per_round=2"], "fixed"),
    "privacy.target_epsilon": (["privacy.level=client", "privacy.noise_multiplier=2",
                                "rounds=4"], 3.0),
    "privacy.delta": ([], None),  # changes ε only: test_privacy_dp
    "privacy.accountant": ([], None),  # changes ε only: test_privacy_dp
    "clock.seconds_per_step": ([], 0.01),
    "clock.server_up": ([], 1e4),
    "clock.server_down": ([], 1e4),
    "data.natural_blocks": ([], None),  # needs LEAF writers: test_async_runs
    "output.target_acc": ([], None),  # summary.json time_to_target: test_async_runs
    "output.stop_at_target": (["output.target_acc=0.01"], True),  # ends after round 1
    "output.max_sim_s": (["clock.profile=prfl"], 0.01),  # ends after round 1
    "launcher.name": ([], None),  # distributed: tested in test_distributed
    "engine.name": (["model.name=cnn"], "vectorized"),
    "engine.device": ([], None),  # no second device here
    "engine.threads": ([], None),  # speed only
    "engine.chunk": ([], None),  # rows per kernel call, fixed per run: test_batching
    "launcher.timeout_s": ([], None),  # distributed faults: test_distributed
    "launcher.exchange": ([], None),  # distributed decentralized: test_distributed
    "output.dir": ([], None),  # where run directories go: every CLI test
    "output.checkpoint_every": ([], None),  # checked below
    "output.keep": ([], None),  # checked below
    "output.keep_every": ([], None),  # checked below
    "output.eval_every": (["rounds=3"], 2),
    "output.plots": ([], None),  # files in plots/: test_runner
    "output.finetune_steps": (["data.client_test_fraction=0.3"], 2),
    "output.client_eval": ([], None),  # whose validation is recorded: test_records_cohort
    "output.tensorboard": ([], None),  # event files read back: test_results
    "output.mlflow": ([], None),  # an MLflow file store read back: test_results
    "notify.events": ([], None),  # messages received on 127.0.0.1: test_results
    "notify.every": ([], None),  # every_k messages: test_results
    "notify.urls_file": ([], None),  # a secrets file outside the run directory: test_results
    "aggregator": ([], None),  # test_simcore
    "algorithm": ([], None),  # every registered algorithm's keys: ALGO_CONTEXT
}

#: the personalised methods need a model with a body and a head (fedbn: normalisation
#: layers) and a personal test split (their per-client models show only there)
PERSONAL = ["model.name=mlp", "model.hidden=[8]", "data.client_test_fraction=0.3"]
ALGO_BASE: dict[str, list[str]] = {
    **{name: PERSONAL for name in ("fedper", "fedrep", "lg_fedavg", "ditto", "pfedme",
                                   "per_fedavg", "apfl")},
    "fedbn": ["model.name=cnn", "model.width=0.125", "data.client_test_fraction=0.3"],
    "dfedper": ["model.name=mlp", "model.hidden=[8]"],  # a body to mix
}

ALGO_CONTEXT: dict[str, tuple[list[str], Any]] = {
    "head": ([], '"1."'),  # the mlp's first hidden layer
    "apfl.alpha_lr": ([], 0.5),
    "per_fedavg.delta": (["algorithm.variant=hf"], 0.1),
    "clients_per_round": (["data.nodes=6"], 2),
    "clustered.clients_per_round": (["data.nodes=6"], 4),  # k = 3 clusters need ≥ 3 per round
    "fraction": (["data.nodes=6"], 0.5),
    "server_momentum": (["algorithm.server_optimizer=momentum"], 0.5),
    "server_betas": (["algorithm.server_optimizer=adam", "algorithm.server_lr=0.01"],
                     [0.5, 0.9]),
    "server_eps": (["algorithm.server_optimizer=adam", "algorithm.server_lr=0.01"], 0.1),
    "server_lr": ([], 0.5),
    "prox_mu": (["train.local_steps=5"], 1.0),
    "k": (["data.nodes=6", "data.partition=dirichlet"], 2),
    "pca_dim": (["data.nodes=8", "algorithm.k=3", "data.partition=dirichlet"], 4),
    "exchange_period": (["topology.name=ring", "data.nodes=5"], 2),
    "offsets": (["topology.name=edges", f"topology.file={NODE_LIST}", "data.nodes=8",
                 "algorithm.exchange_period=8"], "colouring"),
    "exchange": (["algorithm.exchange_period=2"], "two_way"),
    "epoch_swap": (["algorithm.exchange_period=3", "algorithm.exchange=two_way"], True),
    "piw": (["algorithm.exchange_period=2"], 2.0),
    "use_gcoef": (["algorithm.exchange_period=2"], True),
    "mu": ([], 100.0),
    "eta": ([], 0.5),
    "rho": ([], 0.5),
    "rho_scaling": ([], 1.5),
    "inner_steps": ([], 2),
    "interval": ([], 2),
    "personal_head": (["model.name=mlp", "model.hidden=[16]"], True),  # needs a body
    "moon.tau": (["model.name=mlp", "model.hidden=[16]"], 0.1),  # logistic: z is the input
    "choco.levels": (["algorithm.compressor=qsgd"], 4),  # levels: qsgd's alone
    "exact_diffusion": ([], True),
    "concurrency": ([], 2),
    "fedasync.staleness_b": (["algorithm.staleness=hinge", "rounds=4"], 0),
    "fedbuff.staleness_b": (["algorithm.staleness=hinge", "algorithm.buffer_size=2",
                             "rounds=4"], 0),
    **{f"prfl.{key}": ([*PRFL, *ctx], value) for key, (ctx, value) in {
        "densities": ([], [1.0, 0.5, 0.5, 0.2]),
        "base_density": ([], 0.2),
        "min_density": (["algorithm.interval=1", "rounds=6", "clock.speeds=[1,1,1,0.2]"],
                        0.04),
        "density_step": (["algorithm.interval=1", "algorithm.patience=1", "rounds=5"], 0.1),
        "interval": (["rounds=4"], 2),
        "patience": (["algorithm.interval=1", "algorithm.patience=1", "rounds=5"], 3),
        "recovery": (["algorithm.interval=1", "algorithm.patience=1", "rounds=5"], False),
        "balance_reference": (["algorithm.interval=1", "rounds=5",
                               "clock.speeds=[0.5,1,1,0.3]"], "client0"),
        "cost_coefficient": (["algorithm.interval=1", "rounds=3", "model.name=cnn"], False),
        "merge": (STALE, "masked_average"),
        "staleness": (STALE, "constant"),
        "staleness_a": (STALE, 0.3),
        "staleness_b": ([*STALE, "algorithm.staleness=hinge"], 0),
        "residual_split": ([], False),
        "mode": ([], "sync"),
    }.items()},
    **{f"heterofl.{key}": (["model.name=mlp", "model.hidden=[16]", *ctx], value)
       for key, (ctx, value) in {
        "levels": ([], [1.0, 0.25]),
        "proportions": ([], [0.25, 0.75, 0.0, 0.0, 0.0]),
        "assignment": (["rounds=3"], "dynamic"),
        "client_rates": ([], [1.0, 0.5, 0.5, 0.25]),
        "weighted": (["data.partition=dirichlet"], True),
        "scaler": ([], False),
        "clients_per_round": (["data.nodes=6"], 2),
        "fraction": (["data.nodes=6"], 0.5),
    }.items()},
}


def leaves(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, Any]]:
    out = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and \
                name not in ("algorithm", "aggregator"):
            out += leaves(ann, f"{prefix}{name}.")
        else:
            out.append((prefix + name, ann, field))
    return out


def alternative(ann: Any, default: Any) -> Any:
    if get_origin(ann) is Literal:
        return next(v for v in get_args(ann) if v != default)
    if ann is bool:
        return not default
    if ann is int:
        return default + 1
    if ann is float:
        return default * 0.5 if default else 0.1
    raise AssertionError(f"no automatic alternative for {ann}")


def fingerprint(overrides: list[str]) -> tuple[Any, ...]:
    res = run(load_config(None, overrides), write=False)
    s = res.summary
    p, _, _ = res.algorithm.models()  # type: ignore[union-attr]
    return (s["final"].get("test_loss"), s["final"].get("train_loss"), s["sim_time_s"],
            s["bytes_up"], s["bytes_down"], len(res.history), float(p.double().sum()),
            s["final"].get("personal_test_acc"))


def informational_field(field: Any) -> bool:
    extra = field.json_schema_extra or {}
    return isinstance(extra, dict) and bool(extra.get("informational"))


def fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value).replace(" ", "")


def cases() -> list[tuple[str, list[str], list[str]]]:
    """(key, context, context + change) for every key of the tree that a run can show."""
    out = []
    for key, ann, field in leaves(Config):
        if informational_field(field) or key.startswith(("distill.", "influence.")):
            continue  # DISTILL_CONTEXT / INFLUENCE_CONTEXT: they change distill runs / scores
        ctx, value = CONTEXT.get(key, (SYNTHETIC if key.startswith("data.synthetic.") else [],
                                       "auto"))
        if value is None:
            continue
        if value == "auto":
            value = alternative(ann, field.get_default(call_default_factory=True))
        out.append((key, BASE + ctx, BASE + ctx + [f"{key}={fmt(value)}"]))
    for name, cls in sorted(ALGORITHM_CONFIGS.classes.items()):
        dec = cls.kind == "decentralized"
        for key, ann, field in leaves(cls):
            if key == "name":
                continue
            ctx, value = ALGO_CONTEXT.get(f"{name}.{key}", ALGO_CONTEXT.get(key, ([], "auto")))
            if value == "auto":
                value = alternative(ann, field.get_default(call_default_factory=True))
            base = BASE + (["topology.name=ring"] if dec else []) + [f"algorithm.name={name}"] \
                + ALGO_BASE.get(name, [])
            out.append((f"{name}.{key}", base + ctx,
                        base + ctx + [f"algorithm.{key}={fmt(value)}"]))
    return out


@pytest.mark.parametrize(("key", "before", "after"), cases(), ids=[c[0] for c in cases()])
def test_every_key_changes_the_run(key: str, before: list[str], after: list[str]) -> None:
    torch.manual_seed(0)
    assert fingerprint(after) != fingerprint(before), f"{key} changed nothing"


# ---------------------------------------------------------------- fedweave distill's keys
#: a tiny distill run on digits: 2 teachers (trained once, then reused), 2 initial batches,
#: one student epoch with one adaptive batch, both baselines
DISTILL_BASE = ["name=walk", "rounds=1", "data.nodes=2", "data.partition=iid",
                "model.name=cnn", "model.norm=batch", "model.width=0.25", "output.plots=false",
                "output.progress=false", "distill.synthesis.iterations=3",
                "distill.synthesis.batch_size=16", "distill.synthesis.initial_batches=2",
                "distill.student.epochs=1", "distill.student.steps_per_epoch=3",
                "distill.student.batch_size=16", "distill.student.new_batches_per_epoch=1",
                "engine.threads=1"]

#: key → (context, new value); every distill.* key is listed
DISTILL_CONTEXT: dict[str, tuple[list[str], Any]] = {
    "distill.synthesis.preset": ([], "paper"),
    "distill.synthesis.iterations": ([], 4),
    "distill.synthesis.lr": ([], 0.01),
    "distill.synthesis.tv": ([], 0.5),
    "distill.synthesis.l2": ([], 0.05),
    "distill.synthesis.bn": ([], 0.5),
    "distill.synthesis.competition": ([], 0.5),
    # the competition term's shape shows through the uint8 images when it weighs enough
    "distill.synthesis.temperature": (["distill.synthesis.competition=1000"], 1.0),
    "distill.synthesis.divergence": (["distill.synthesis.competition=1000"], "reversed_kl"),
    "distill.synthesis.batch_size": ([], 8),
    "distill.synthesis.jitter": ([], 0),
    "distill.synthesis.flip": ([], True),
    "distill.synthesis.initial_batches": ([], 3),
    "distill.synthesis.sampling": ([], 2),
    "distill.student.model": ([], {"name": "mlp", "hidden": [16]}),
    "distill.student.epochs": ([], 2),
    "distill.student.steps_per_epoch": ([], 4),
    "distill.student.batch_size": ([], 8),
    "distill.student.lr": ([], 0.01),
    "distill.student.momentum": ([], 0.5),
    "distill.student.weight_decay": ([], 0.1),
    "distill.student.milestones": (["distill.student.epochs=2"], [1]),
    "distill.student.gamma": (["distill.student.epochs=2", "distill.student.milestones=[1]"],
                              0.5),
    "distill.student.loss": ([], "kl"),
    "distill.student.temperature": (["distill.student.loss=kl"], 4.0),
    "distill.student.class_weights": ([], [1, 2, 1, 2, 1, 2, 1, 2, 1, 2]),
    "distill.student.augment": ([], False),
    "distill.student.crop_padding": ([], 1),
    "distill.student.adaptive": ([], False),
    "distill.student.new_batches_per_epoch": ([], 2),
    "distill.student_shards": (["data.nodes=3"], 1),  # other teachers: trained afresh
    "distill.baselines": ([], ["real"]),
}


@pytest.fixture(scope="module")
def distill_fingerprint(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from fedweave.workflows.distill import distill

    out = tmp_path_factory.mktemp("distill-walk")
    threads = torch.get_num_threads()
    first = distill(load_config(None, [*DISTILL_BASE, "algorithm.name=local",
                                       f"output.dir={out}"]))
    cache: dict[tuple[str, ...], tuple[Any, ...]] = {}

    def fingerprint(overrides: list[str]) -> tuple[Any, ...]:
        if tuple(overrides) not in cache:
            cfg = load_config(None, [*overrides, "algorithm.name=local", f"output.dir={out}"])
            same = cfg.data.nodes == 2
            res = distill(cfg, teachers_from=first.run_dir if same else None)
            s = res.summary
            from safetensors.torch import load_file

            syn = load_file(str(res.run_dir / "synthetic.safetensors"))
            cache[tuple(overrides)] = (
                float(syn["images"].double().sum()), len(syn["labels"]),
                s["student"]["final"]["train_loss"], s["student"]["final"]["test_loss"],
                tuple((k, v["final"]["train_loss"]) for k, v in s["baselines"].items()))
        return cache[tuple(overrides)]

    yield fingerprint
    torch.set_num_threads(threads)  # engine.threads=1 above


@pytest.mark.parametrize("key", sorted(DISTILL_CONTEXT))
def test_every_distill_key_changes_the_distill_run(key: str, distill_fingerprint: Any) -> None:
    ctx, value = DISTILL_CONTEXT[key]
    before = DISTILL_BASE + ctx
    after = [*before, f"{key}={fmt(value)}"]
    assert distill_fingerprint(after) != distill_fingerprint(before), f"{key} changed nothing"


def test_distill_keys_are_refused_outside_fedweave_distill() -> None:
    with pytest.raises(UserError, match=r"distill\.student"):
        load_config(None, [*BASE, "distill.student.epochs=3"])  # fedavg: refused
    cfg = load_config(None, [*BASE, "algorithm.name=local", "distill.student.epochs=3"])
    with pytest.raises(UserError, match="fedweave distill"):
        run(cfg, write=False)  # `fedweave run` would train the teachers only


def test_the_walk_covers_every_key_and_the_skipped_ones_are_tested_elsewhere() -> None:
    keys = {k for k, _, _ in leaves(Config)}
    # distill.synthesis.batches_from names another run: tests/test_distill_reuse.py
    assert {k for k in keys if k.startswith("distill.")} == set(DISTILL_CONTEXT) | {
        "distill.synthesis.batches_from"}
    assert set(CONTEXT) <= keys, set(CONTEXT) - keys  # no stale entries
    algo_keys = {k for cls in ALGORITHM_CONFIGS.classes.values() for k, _, _ in leaves(cls)}
    algo_keys |= {f"{name}.{k}" for name, cls in ALGORITHM_CONFIGS.classes.items()
                  for k, _, _ in leaves(cls)}
    assert set(ALGO_CONTEXT) <= algo_keys, set(ALGO_CONTEXT) - algo_keys
    skipped = {k for k, (_, v) in CONTEXT.items() if v is None}
    informational = {k for k, _, f in leaves(Config) if informational_field(f)}
    assert informational == {"output.progress", "data.synthetic.alpha"}
    assert len(cases()) > 100 and len(skipped) <= 34  # each names the test that covers it


def test_output_keys_act(tmp_path: Path) -> None:
    base = [*BASE, "rounds=6", f"output.dir={tmp_path}"]
    none = run(load_config(None, [*base, "name=none", "output.checkpoint_every=0"]))
    assert not list((none.run_dir / "checkpoints").glob("round-*"))  # type: ignore[operator]
    every = run(load_config(None, [*base, "name=k", "output.keep=every_k",
                                   "output.keep_every=2"]))
    kept = sorted(p.name for p in (every.run_dir / "checkpoints").glob("*.safetensors"))  # type: ignore[operator]
    assert kept == [f"round-{r:06d}.safetensors" for r in (2, 4, 5, 6)]
    latest = run(load_config(None, [*base, "name=latest"]))
    kept = sorted(p.name for p in (latest.run_dir / "checkpoints").glob("*.safetensors"))  # type: ignore[operator]
    assert kept == ["round-000005.safetensors", "round-000006.safetensors"]
    assert none.run_dir.name.startswith("none-")  # type: ignore[union-attr]


def test_keys_with_no_effect_in_their_context_are_refused_or_warned(caplog: Any) -> None:
    with pytest.raises(UserError, match="topology"):
        load_config(None, [*BASE, "topology.degree=4"])
    with pytest.raises(UserError, match="link_drop"):
        load_config(None, [*BASE, "clock.link_drop=0.1"])
    with pytest.raises(UserError, match="exchange_period"):
        load_config(None, [*BASE, *DEC, "algorithm.name=cadmm", "algorithm.exchange_period=2"])
    for over, word in ((["data.alpha=0.1"], "data.alpha"),
                       (["train.nesterov=true"], "train.nesterov"),
                       (["algorithm.server_momentum=0.5"], "server_momentum"),
                       (["model.hidden=[8]"], "model.hidden")):
        caplog.clear()
        load_config(None, [*BASE, *over])
        assert any(word in r.getMessage() and "no effect" in r.getMessage()
                   for r in caplog.records), word


#: influence key → (scorer whose scores it changes, new value), walked on one finished run
INFLUENCE_CONTEXT: dict[str, tuple[str, Any]] = {
    "influence.validation": ("tracin", "node"),
    "influence.layers": ("if_ekfac", ["1"]),
    "influence.damping": ("if_ekfac", 0.5),
    "influence.fisher": ("if_ekfac", "empirical"),
    "influence.dice.hops": ("dice", 2),
    "influence.dice.ground_truth": ("dice", True),
    "influence.el2n.runs": ("el2n", 2),
    "influence.el2n.epochs": ("el2n", 2),
}


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = load_config(None, [*BASE, *DEC, "model.name=mlp", "model.hidden=[8]", "data.nodes=3",
                             "output.keep=all", f"output.dir={tmp_path_factory.mktemp('k')}",
                             "influence.el2n.runs=1"])
    return Path(run(cfg).run_dir)  # type: ignore[arg-type]


def score_fingerprint(run_dir: Path, scorer: str, overrides: list[str]) -> tuple[Any, ...]:
    from fedweave.influence import SCORERS, ScoredRun

    out = SCORERS.get(scorer)().score(ScoredRun.open(run_dir, overrides))
    return float(out.score.double().sum()), repr(out.batches)


@pytest.mark.parametrize("key", sorted(INFLUENCE_CONTEXT))
def test_every_influence_key_changes_the_scores(scored_run: Path, key: str) -> None:
    scorer, value = INFLUENCE_CONTEXT[key]
    before = score_fingerprint(scored_run, scorer, [])
    assert score_fingerprint(scored_run, scorer, [f"{key}={fmt(value)}"]) != before, key


def test_the_influence_walk_covers_every_influence_key() -> None:
    keys = {k for k, _, _ in leaves(Config) if k.startswith("influence.")}
    assert keys == set(INFLUENCE_CONTEXT)
