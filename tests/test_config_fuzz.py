"""Property-based fuzzing of the config tree (Hypothesis): random ``--set`` overrides — every key
of the tree (every registered algorithm's and aggregator's keys included) and unknown ones, with
values of random types and ranges (NaN, inf, negative, huge, strings, lists, mappings, YAML
syntax) — either give a valid config or one ``UserError`` line; configs that validate run to
the end or stop with one ``UserError`` line; through the CLI a bad config exits 2 with one line,
no traceback and no run directory. Never another exception, never a hang (a SIGALRM guard).

Settings (deterministic: ``derandomize=True``, no example database; ``FEDWEAVE_FUZZ_EXAMPLES=n``
runs n random examples per property instead): 300 examples of validation (5 s deadline each),
25 tiny runs (1–2 rounds, ≤ 300 samples) and 4 CLI calls, each under a SIGALRM guard or a
subprocess timeout instead of a wall-time deadline."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from fedweave.config import AGGREGATOR_CONFIGS, ALGORITHM_CONFIGS, Config
from fedweave.errors import UserError
from fedweave.plugins import load_builtins, load_config
from fedweave.runner import run

load_builtins()
_RANDOM = os.environ.get("FEDWEAVE_FUZZ_EXAMPLES")


def fuzz(examples: int, seconds: float | None) -> settings:
    """``seconds``: Hypothesis' per-example deadline (None where a loaded machine makes wall
    time meaningless; the SIGALRM guard and the subprocess timeout still catch a hang)."""
    return settings(max_examples=int(_RANDOM) if _RANDOM else examples,
                    derandomize=not _RANDOM, database=None,
                    deadline=None if seconds is None else timedelta(seconds=seconds),
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _leaves(cls: type[BaseModel], prefix: str) -> list[str]:
    out = []
    for name, field in cls.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel) and name not in (
                "algorithm", "aggregator"):
            out += _leaves(ann, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


KEYS = sorted({*_leaves(Config, ""),
               *(f"algorithm.{k}" for c in ALGORITHM_CONFIGS.classes.values()
                 for k in c.model_fields),
               *(f"aggregator.{k}" for c in AGGREGATOR_CONFIGS.classes.values()
                 for k in c.model_fields),
               "data.bogus", "attack", "privacy.extra", "clock"})
NAMES = {"algorithm.name": sorted(ALGORITHM_CONFIGS.classes),
         "aggregator.name": sorted(str(k) for k in AGGREGATOR_CONFIGS.classes if k),
         "attack.name": ["label_flip", "noisy_labels", "input_noise", "gaussian", "sign_flip",
                         "scale", "alie"],
         "privacy.level": ["client", "sample"]}

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6),
    st.sampled_from([0, 1, 2, -1, 10**12, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 0.5, 1.0, 1e-300]),
    st.text(max_size=6))
values = st.one_of(scalars, st.lists(scalars, max_size=3),
                   st.dictionaries(st.text(max_size=4), scalars, max_size=2))


@st.composite
def override(draw: st.DrawFn) -> str:
    key = draw(st.sampled_from(KEYS))
    if key in NAMES and draw(st.booleans()):
        return f"{key}={draw(st.sampled_from(NAMES[key]))}"
    if draw(st.integers(0, 9)) == 0:  # raw text: the YAML parser too
        return f"{key}={draw(st.text(max_size=8))}"
    return f"{key}={json.dumps(draw(values), allow_nan=True)}"


def one_line(exc: UserError) -> None:
    message = str(exc)
    assert message and "\n" not in message, repr(message)


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """A hang fails the example (Hypothesis' deadline only judges examples that return)."""

    def hang(signum: int, frame: Any) -> None:
        raise TimeoutError(f"no result after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@fuzz(300, 5)
@given(st.lists(override(), min_size=1, max_size=4))
def test_random_overrides_validate_or_give_one_user_error_line(overrides: list[str]) -> None:
    with time_limit(30):
        try:
            load_config(None, overrides)
        except UserError as exc:
            one_line(exc)


# plausible values of the keys that reach run-time checks (who attacks, rows per rule, ...)
RUNTIME = st.sampled_from([
    "algorithm.name=fedavg", "algorithm.name=scaffold", "algorithm.name=clustered",
    "algorithm.name=dsgd", "algorithm.name=gossip", "algorithm.name=centralized",
    "algorithm.name=pdmm_isvr", "topology.name=ring", "topology.name=complete",
    "aggregator.name=median", "aggregator.name=krum", "aggregator.f=3",
    "aggregator.name=trimmed_mean", "aggregator.name=centered_clip",
    "algorithm.clients_per_round=2", "algorithm.clients_per_round=9", "data.nodes=1",
    "data.nodes=3", "data.nodes=7", "attack.name=sign_flip", "attack.name=alie",
    "attack.name=input_noise", "attack.fraction=0.3", "attack.nodes=[0]", "attack.nodes=[9]",
    "privacy.level=client", "privacy.sampling=fixed", "privacy.noise_multiplier=0",
    "privacy.clip=.inf", "privacy.target_epsilon=0.01", "clock.message_corruption=1",
    "clock.deadline_s=1e-9", "clock.node_crash=0.5", "clock.client_dropout=0.9",
    "data.partition=classes", "data.classes_per_node=2", "data.partition=shards",
    "train.local_steps=1", "model.name=mlp", "model.name=cnn", "train.lr=1e30"])
SMALL = ["rounds=1", "data.train_samples=300", "data.test_samples=60", "model.name=logistic",
         "engine.name=loop", "output.plots=false", "output.progress=false"]


@fuzz(25, None)
@given(st.lists(st.one_of(RUNTIME, override()), min_size=1, max_size=5))
def test_configs_that_validate_run_or_stop_with_one_user_error_line(overrides: list[str]
                                                                    ) -> None:
    with time_limit(120):
        try:
            cfg = load_config(None, [*SMALL, *overrides])
            if cfg.rounds > 2:
                cfg = load_config(None, [*SMALL, *overrides, "rounds=2"])
            run(cfg, write=False)
        except UserError as exc:
            one_line(exc)


@pytest.mark.slow
@fuzz(4, None)
@given(st.lists(override(), min_size=1, max_size=3).filter(lambda o: _refused(o)))
def test_the_cli_refuses_bad_configs_with_exit_2_one_line_and_no_run_directory(
        overrides: list[str]) -> None:
    with time_limit(150):
        out = Path(f"/tmp/fedweave-fuzz-{os.getpid()}")
        args = [a for o in overrides for a in ("--set", o)]
        proc = subprocess.run([sys.executable, "-m", "fedweave", "run", *args, "--out",
                               str(out)], capture_output=True, text=True, timeout=140)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert not out.exists() or not any(out.iterdir())


def _refused(overrides: list[str]) -> bool:
    try:
        load_config(None, overrides)
    except UserError:
        return True
    return False
