"""Issue 26: random, hostile options on every command (run, sweep, report, export, distill,
influence, prune, data, config, hosts, --procs, --import) end with exit 0 or 2 and never a
traceback.

Each example is cheap: the commands run in-process (typer's CliRunner) and the step after
input validation — building the data and model, launching ranks, downloading, scoring — is
replaced by a stub that stops with a ``UserError`` (exit 2). Everything a user's input reaches
before that (option parsing, config files, ``--set``, output paths, run directories, limits)
runs for real."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fedweave.cli import app
from fedweave.config import Config
from fedweave.config.reference import keys
from fedweave.errors import UserError

cli = CliRunner()
KEYS = [k.path for k in keys(Config)] + ["algorithm.name", "algorithm.clients_per_round",
                                         "algorithm.concurrency", "algorithm.buffer_size",
                                         "aggregator.name", "aggregator.m", "nope.key"]
NASTY = ["", "0", "-1", "1", "2", "1e400", "-1e400", ".nan", "1e-9", "1000000000",
         "1000000000000", "null", "true", "[]", "[-5]", "[1, 1]", "[1000000000]", "{}",
         "{a: 1}", "[" * 40 + "]" * 40, "'x'", "é", "a" * 300, "fedbuff", "dsgd", "synthetic",
         "multi_krum", "batch", "/proc/x"]
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


class Stopped(UserError):
    """What the stubs raise once the input has been validated."""


def _stop(*_: Any, **__: Any) -> Any:
    raise Stopped("stub: input validated")


@contextlib.contextmanager
def stubbed() -> Iterator[None]:
    """Replace every step after input validation by ``_stop``."""
    import fedweave.cli.run as cli_run
    import fedweave.data.download as download
    import fedweave.data.federated as federated
    import fedweave.influence.base as influence_base
    import fedweave.runner as runner
    import fedweave.workflows.distill as distill
    import fedweave.workflows.prune as prune
    import fedweave.workflows.sweep as sweep

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runner, "build_context", _stop)
        mp.setattr(cli_run, "_launch", _stop)
        mp.setattr(download, "download_dataset", _stop)
        mp.setattr(federated, "build_federated_data", _stop)
        mp.setattr(distill, "build_federated_data", _stop)
        mp.setattr(influence_base.ScoredRun, "open", _stop)
        mp.setattr(prune, "score_run", _stop)
        mp.setattr(prune.PrunePipeline, "create", _stop)
        mp.setattr(sweep, "execute", _stop)
        yield


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "file").write_text("x")
    (root / "dir").mkdir()
    (root / "binary.yaml").write_bytes(b"\x00\xff\xfe")
    (root / "deep.yaml").write_text("a: " + "[" * 3000 + "]" * 3000 + "\n")
    (root / "ok.yaml").write_text("rounds: 1\nmodel: {name: logistic}\n")
    (root / "exit.py").write_text("import sys\nsys.exit(3)\n")
    (root / "broken.py").write_text("def (:\n")
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text("rounds: 1\n")
    (run / "metrics.csv").write_bytes(b"\x00garbage")
    (run / "summary.json").write_text("{not json")
    (run / "prune.json").write_text("[1]")
    return {"file": str(root / "file"), "dir": str(root / "dir"), "new": str(root / "new" /
            "x"), "under": str(root / "file" / "x"), "binary": str(root / "binary.yaml"),
            "deep": str(root / "deep.yaml"), "ok": str(root / "ok.yaml"),
            "exit": str(root / "exit.py"), "broken": str(root / "broken.py"), "run": str(run),
            "proc": "/proc/fedweave-fuzz", "missing": str(root / "missing.yaml")}


PATHS = st.sampled_from(["file", "dir", "new", "under", "binary", "deep", "ok", "exit",
                         "broken", "run", "proc", "missing"])
SETS = st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(NASTY)), max_size=3)
NUMBERS = st.sampled_from(["0", "1", "2", "-3", "100000", "1000000000", "x", "1e9"])


def _sets(pairs: list[tuple[str, str]]) -> list[str]:
    out: list[str] = []
    for key, value in pairs:
        out += ["--set", f"{key}={value}"]
    return out


def _options(draw: Any, place: dict[str, str], options: dict[str, Any]) -> list[str]:
    """Some of ``options`` (name → strategy of values, or None for a flag), drawn."""
    out: list[str] = []
    for name, strategy in options.items():
        if draw(st.booleans()):
            out += [name] if strategy is None else [name, draw(strategy)]
    return [place.get(a, a) for a in out]


COMMANDS = ["run", "sweep", "report", "export", "distill", "influence", "prune", "data show",
            "data download", "data list", "config show", "config docs", "hosts"]


@st.composite
def command_line(draw: Any, place: dict[str, str], command: str) -> list[str]:
    p = st.sampled_from(list(place))  # a place's key, mapped to its path below
    imports = st.sampled_from(["exit", "broken", "missing", "file", "no_such_module_xyz"])
    args = command.split()
    sets = _sets(draw(SETS))
    if command == "run":
        args += draw(st.lists(p, max_size=1)) + sets + _options(draw, place, {
            "--out": p, "--resume": p, "--dir": p, "--procs": NUMBERS, "--import": imports})
    elif command == "sweep":
        args += [draw(p), "--grid", draw(st.sampled_from(["train.lr=0.1,0.2", "x", "=",
                                                           "seed=1,2", "rounds=1000000000"]))]
        args += sets + _options(draw, place, {"--seeds": NUMBERS, "--jobs": NUMBERS,
                                              "--out": p, "--import": imports})
    elif command == "report":
        args += draw(st.lists(p, min_size=1, max_size=2)) + _options(draw, place,
                                                                     {"--out": p})
    elif command == "export":
        args.append(draw(p))
        args += _options(draw, place, {"--round": NUMBERS, "--best": None,
                                       "--node": st.sampled_from(["0", "x"]), "--out": p})
    elif command == "distill":
        args += draw(st.lists(p, max_size=1)) + sets + _options(draw, place, {
            "--out": p, "--resume": p, "--teachers": p, "--import": imports})
    elif command == "influence":
        args += draw(st.lists(p, max_size=1)) + sets + _options(draw, place, {
            "--scorer": st.sampled_from(["random", "nope", "dice", ""]), "--out": p,
            "--resume": p, "--import": imports})
    elif command == "prune":
        args += draw(st.lists(p, max_size=1)) + sets + _options(draw, place, {
            "--scorer": st.sampled_from(["random", "nope"]),
            "--train-ratio": st.sampled_from(["0.5", "0", "2", "nan", "x"]),
            "--keep": st.sampled_from(["top", "lowest", "x"]), "--stage1": p, "--out": p,
            "--resume": p, "--import": imports})
    elif command == "data show":
        args += draw(st.lists(p, max_size=1)) + sets + _options(draw, place, {
            "--out": st.sampled_from(["file", "dir", "under", "proc", "x.txt", "x.png"])})
    elif command == "data download":
        args.append(draw(st.sampled_from(["mnist", "nope", ""])))
        args += _options(draw, place, {"--root": p})
    elif command == "data list":
        args += _options(draw, place, {"--root": p})
    elif command == "config show":
        args += draw(st.lists(p, max_size=1)) + sets + _options(draw, place, {
            "--changed": None, "--import": imports})
    elif command == "config docs":
        args += _options(draw, place, {"--out": p, "--import": imports})
    else:  # hosts
        args += draw(st.lists(p, max_size=2)) + _options(draw, place, {"--port": NUMBERS})
    return [place.get(a, a) for a in args]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_ends_with_0_or_2_and_no_traceback(places: dict[str, str], command: str,
                                                        tmp_path: Path, monkeypatch: Any
                                                        ) -> None:
    monkeypatch.chdir(tmp_path)  # report's default ./report, sweeps' default output

    @SETTINGS
    @given(argv=command_line(places, command))
    def check(argv: list[str]) -> None:
        with stubbed():
            res = cli.invoke(app, argv)
        out = res.output
        assert res.exit_code in (0, 2), (argv, res.exit_code, out[-2000:], res.exception)
        assert res.exception is None or isinstance(res.exception, SystemExit), \
            (argv, repr(res.exception))
        assert "Traceback" not in out, (argv, out[-2000:])
        if res.exit_code == 2:
            errors = [line for line in out.splitlines() if line.startswith("error:")]
            usage = "Usage:" in out  # typer's own usage errors (a bad option value)
            assert len(errors) == 1 or usage, (argv, out[-2000:])

    check()
