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
        "output.progress=false", "engine.backend=loop", "data.partition=iid"]
DEC = ["algorithm.name=dsgd", "topology.name=ring"]
SYNTHETIC = ["data.dataset=synthetic", "data.partition=natural"]

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
    "data.classes_per_node": (["data.partition=classes", "data.classes_per_node=5"], 3),
    "data.class_share_low": (["data.partition=classes", "data.classes_per_node=4"], 0.2),
    "data.sigma": (["data.partition=quantity"], 2.0),
    "data.val_from_train": ([], True),
    "data.train_samples": ([], 500),
    "data.test_samples": ([], 100),
    "data.augment": (["model.name=cnn"], True),
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
    "train.step_size": (["train.scheduler=step", "train.gamma=0.5"], 2),
    "train.gamma": (["train.scheduler=step", "train.step_size=1"], 0.5),
    "train.scheduler": (["train.gamma=0.5", "train.step_size=1"], "step"),
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
    "engine.name": ([], None),  # distributed: tested in test_distributed
    "engine.backend": (["model.name=cnn"], "vectorized"),
    "engine.device": ([], None),  # no second device here
    "engine.threads": ([], None),  # speed only
    "engine.timeout_s": ([], None),  # distributed faults: test_distributed
    "engine.exchange": ([], None),  # distributed decentralized: test_distributed
    "output.dir": ([], None),  # where run directories go: every CLI test
    "output.checkpoint_every": ([], None),  # checked below
    "output.keep": ([], None),  # checked below
    "output.keep_every": ([], None),  # checked below
    "output.eval_every": (["rounds=3"], 2),
    "output.plots": ([], None),  # files in plots/: test_runner
    "output.tensorboard": ([], None),  # event files read back: test_results
    "output.mlflow": ([], None),  # an MLflow file store read back: test_results
    "notify.events": ([], None),  # messages received on 127.0.0.1: test_results
    "notify.every": ([], None),  # every_k messages: test_results
    "notify.urls_file": ([], None),  # a secrets file outside the run directory: test_results
    "aggregator": ([], None),  # test_simcore
    "algorithm": ([], None),  # every registered algorithm's keys: ALGO_CONTEXT
}

ALGO_CONTEXT: dict[str, tuple[list[str], Any]] = {
    "clients_per_round": (["data.nodes=6"], 2),
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
    "piw": (["algorithm.exchange_period=2"], 2.0),
    "use_gcoef": (["algorithm.exchange_period=2"], True),
    "mu": ([], 100.0),
    "eta": ([], 0.5),
    "rho": ([], 0.5),
    "rho_scaling": ([], 1.5),
    "inner_steps": ([], 2),
    "interval": ([], 2),
    "exact_diffusion": ([], True),
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
            s["bytes_up"], s["bytes_down"], len(res.history), float(p.double().sum()))


def informational_field(field: Any) -> bool:
    extra = field.json_schema_extra or {}
    return isinstance(extra, dict) and bool(extra.get("informational"))


def fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value).replace(" ", "")


def cases() -> list[tuple[str, list[str], list[str]]]:
    """(key, context, context + change) for every key of the tree that a run can show."""
    out = []
    for key, ann, field in leaves(Config):
        if informational_field(field):
            continue
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
            ctx, value = ALGO_CONTEXT.get(key, ([], "auto"))
            if value == "auto":
                value = alternative(ann, field.get_default(call_default_factory=True))
            base = BASE + (["topology.name=ring"] if dec else []) + [f"algorithm.name={name}"]
            out.append((f"{name}.{key}", base + ctx,
                        base + ctx + [f"algorithm.{key}={fmt(value)}"]))
    return out


@pytest.mark.parametrize(("key", "before", "after"), cases(), ids=[c[0] for c in cases()])
def test_every_key_changes_the_run(key: str, before: list[str], after: list[str]) -> None:
    torch.manual_seed(0)
    assert fingerprint(after) != fingerprint(before), f"{key} changed nothing"


def test_the_walk_covers_every_key_and_the_skipped_ones_are_tested_elsewhere() -> None:
    keys = {k for k, _, _ in leaves(Config)}
    assert set(CONTEXT) <= keys, set(CONTEXT) - keys  # no stale entries
    algo_keys = {k for cls in ALGORITHM_CONFIGS.classes.values() for k, _, _ in leaves(cls)}
    assert set(ALGO_CONTEXT) <= algo_keys, set(ALGO_CONTEXT) - algo_keys
    skipped = {k for k, (_, v) in CONTEXT.items() if v is None}
    informational = {k for k, _, f in leaves(Config) if informational_field(f)}
    assert informational == {"output.progress", "data.synthetic.alpha"}
    assert len(cases()) > 100 and len(skipped) < 30


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
