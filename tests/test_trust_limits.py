"""Issue 26, bad input on every command: sizes that cannot fit or loops that cannot finish are
refused up front, output paths are checked before any work, damaged records name their file,
and silently accepted settings are refused — each one line and exit 2 (``UserError``).

In-process (no subprocess per case): the config checks through ``fedweave.load_config``, the
memory estimates through the functions that guard each allocation, the commands through
typer's ``CliRunner``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from fedweave.cli import app
from fedweave.config import ModelConfig
from fedweave.config.limits import check_limits
from fedweave.errors import UserError
from fedweave.plugins import import_plugin, load_config

cli = CliRunner()


def refused(*overrides: str, path: Path | str | None = None) -> str:
    """The one-line message of a config that ``load_config`` (+ the up-front limits) refuses."""
    with pytest.raises(UserError) as info:
        check_limits(load_config(path, list(overrides)))
    message = str(info.value)
    assert "\n" not in message
    return message


def one_line_exit_2(args: list[str]) -> str:
    res = cli.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), res.output
    assert "Traceback" not in res.output, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output
    return " ".join(res.output[res.output.index("error:"):].split())


# ------------------------------------------------------------------ silently accepted before
@pytest.mark.parametrize(("overrides", "needles"), [
    (["model.width=1e-9"], ("model.width", "1 unit wide", "0.015625")),
    (["train.scheduler=multistep", "train.milestones=[-5]"], ("train.milestones", "-5")),
    (["algorithm.name=fedasync", "algorithm.concurrency=50"],
     ("algorithm.concurrency=50 exceeds data.nodes=10",)),
    (["attack.name=gaussian", "attack.nodes=[1,1]"], ("attack.nodes names node 1 more than",)),
    (["attack.name=gaussian", "attack.nodes=[3,10]"], ("attack.nodes: 10 is not a node",)),
    (["aggregator.name=multi_krum", "aggregator.m=5", "algorithm.clients_per_round=4"],
     ("aggregator.m=5", "cohort of 4")),
    # privacy keys left at their default values but written without a level: no privacy
    (["privacy.noise_multiplier=1.0"], ("privacy.noise_multiplier is set", "no privacy")),
    (["privacy.clip=1.0", "privacy.accountant=rdp"], ("privacy.clip is set",)),
    (["privacy.sampling=poisson"], ("privacy.sampling is set",)),
    (["attack.fraction=0.0"], ("attack.fraction is set but attack.name is null",)),
], ids=["width-1e-9", "milestone-negative", "fedasync-concurrency", "attackers-twice",
        "attacker-outside", "multi-krum-m", "privacy-sigma-no-level", "privacy-clip-no-level",
        "privacy-sampling-no-level", "attack-key-no-name"])
def test_settings_accepted_silently_before_are_refused(overrides: list[str],
                                                        needles: tuple[str, ...]) -> None:
    message = refused(*overrides)
    for needle in needles:
        assert needle in message, message


def test_a_dumped_section_with_a_null_switch_still_loads(tmp_path: Path) -> None:
    """config.yaml spells out every key (privacy.level: null beside its defaults): quiet."""
    cfg = load_config(None, [])
    from fedweave.config import dump_config

    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "c.yaml").privacy.level is None


def test_student_milestones_are_checked_too() -> None:
    assert "distill.student.milestones" in refused("algorithm.name=local",
                                                   "distill.student.milestones=[0]")


# ------------------------------------------------------------------ loops that cannot finish
def test_rounds_and_fedbuff_buffer_have_a_bound_with_the_reason() -> None:
    assert "cannot finish" in refused("rounds=1000000000000")
    message = refused("algorithm.name=fedbuff", "algorithm.buffer_size=1000000000")
    assert "algorithm.buffer_size=1000000000" in message and "lower buffer_size" in message
    assert load_config(None, ["rounds=1000000"]).rounds == 1_000_000


def test_sweep_seeds_beyond_the_bound(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("rounds: 1\n")
    message = one_line_exit_2(["sweep", str(tmp_path / "c.yaml"), "--grid", "train.lr=0.1,0.2",
                               "--seeds", "1000000000", "--out", str(tmp_path / "s")])
    assert "2,000,000,000 runs" in message
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------ nesting depth
@pytest.mark.parametrize("suffix", [".yaml", ".toml"])
def test_deeply_nested_files_are_one_line(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"deep{suffix}"
    sep = ": " if suffix == ".yaml" else " = "
    path.write_text("a" + sep + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested more than 16 levels" in refused(path=path)
    path.write_text("a" + sep + "[" * 20 + "]" * 20 + "\n")  # parses, still too deep
    assert "nested more than 16 levels" in refused(path=path)


def test_deeply_nested_set_values_and_keys() -> None:
    assert "nested more than 16 levels" in refused("a=" + "[" * 5000 + "]" * 5000)
    assert "a key of 101 parts" in refused("a." * 100 + "b=1")


# ------------------------------------------------------------------ sizes against memory
@pytest.mark.parametrize(("cfg", "shape", "needle"), [
    (ModelConfig(name="cnn", width=1e6), (1, 28, 28), "model.name=cnn"),
    (ModelConfig(name="mlp", hidden=[10**9]), (1, 8, 8), "model.name=mlp"),
    (ModelConfig(name="mlp", hidden=[100_000, 100_000]), (1, 8, 8), "10,0"),
    (ModelConfig(name="mlp"), (10**7,), "(10000000,)"),
], ids=["width-1e6", "hidden-1e9", "mlp-1e5x1e5", "features-1e7"])
def test_models_that_cannot_fit_are_refused_before_allocation(cfg: ModelConfig,
                                                              shape: tuple[int, ...],
                                                              needle: str) -> None:
    from fedweave.models import build_model

    with pytest.raises(UserError, match="GiB of memory") as info:
        build_model(cfg, shape, 10)
    assert needle in str(info.value)


def test_the_size_check_draws_nothing_from_the_rng() -> None:
    """The meta-device build must not move the global torch RNG: same initial weights."""
    from fedweave.models import MODELS, build_model

    torch.manual_seed(3)
    a = build_model(ModelConfig(name="cnn"), (1, 8, 8), 10)
    torch.manual_seed(3)
    b = MODELS.get("cnn")(ModelConfig(name="cnn"), (1, 8, 8), 10)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize(("overrides", "needle"), [
    (["train.local_steps=1000000000000"], "train.local_steps=1000000000000"),
    (["train.epoch_samples=1000000000000"], "train.epoch_samples=1000000000000"),
], ids=["local-steps-1e12", "epoch-samples-1e12"])
def test_schedules_that_cannot_fit_are_refused_before_the_data(overrides: list[str],
                                                               needle: str) -> None:
    message = refused(*overrides)
    assert needle in message and "GiB are available" in message


def test_synthetic_nodes_refused_before_the_sizes_are_drawn() -> None:
    from fedweave.data.federated import build_federated_data

    cfg = load_config(None, ["data.dataset=synthetic", "data.nodes=1000000000"])
    with pytest.raises(UserError, match=r"data.nodes=1000000000") as info:
        build_federated_data(cfg.data, 0)
    assert "GiB are available" in str(info.value)


def test_a_chunk_that_cannot_fit(tmp_path: Path) -> None:
    from fedweave.runner import run

    cfg = load_config(None, ["rounds=1", "model.name=logistic", "engine.name=vectorized",
                             "engine.chunk=1000000000000", "output.plots=false"])
    with pytest.raises(UserError, match=r"engine.chunk=1000000000000"):
        run(cfg, write=False)


def test_a_synthesis_batch_that_cannot_fit() -> None:
    from fedweave.workflows.distill import Distillation

    cfg = load_config(None, ["algorithm.name=local", "data.nodes=2", "model.name=lenet",
                             "model.norm=batch", "distill.synthesis.batch_size=1000000000"])
    with pytest.raises(UserError, match=r"distill.synthesis.batch_size=1000000000"):
        Distillation(cfg)


# ------------------------------------------------------------------ output paths, before work
def _files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "afile").write_text("x")
    (tmp_path / "adir").mkdir()
    return tmp_path / "afile", tmp_path / "adir"


@pytest.mark.parametrize(("args", "needle"), [
    (["influence", "RUN", "--scorer", "random", "--out", "FILE"], "is a file, not a folder"),
    (["report", "RUN", "--out", "FILE"], "is a file, not a folder"),
    (["export", "RUN", "--out", "DIR"], "is a folder; give a file name"),
    (["export", "RUN", "--out", "FILE/m.safetensors"], "lies under the file"),
    (["data", "show", "--out", "DIR"], "is a folder"),
    (["data", "show", "--out", "TMP/p.txt"], "cannot write .txt; use one of"),
    (["config", "docs", "--out", "DIR"], "is a folder"),
    (["data", "download", "mnist", "--root", "FILE"], "is a file, not a folder"),
], ids=["influence", "report", "export-dir", "export-under-file", "data-show-dir",
        "data-show-txt", "config-docs", "download-root"])
def test_output_paths_are_checked_before_any_work(tmp_path: Path, args: list[str],
                                                  needle: str) -> None:
    afile, adir = _files(tmp_path)
    subst = {"FILE": str(afile), "DIR": str(adir), "RUN": str(tmp_path / "norun"),
             "TMP": str(tmp_path)}
    argv = [subst.get(a, a.replace("FILE/", f"{afile}/").replace("TMP/", f"{tmp_path}/"))
            for a in args]
    assert needle in one_line_exit_2(argv)


def _fake_run(path: Path, summary: Any = None, metrics: bytes = b"round,node,split,metric,"
              b"value,sim_time\n1,global,test,acc,0.5,0.0\n") -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("rounds: 1\nmodel: {name: logistic}\n")
    (path / "metrics.csv").write_bytes(metrics)
    if summary is not None:
        (path / "summary.json").write_text(summary if isinstance(summary, str)
                                           else json.dumps(summary))
    return path


def test_report_writes_outside_the_run_directory_by_default(tmp_path: Path,
                                                            monkeypatch: Any) -> None:
    run_dir = _fake_run(tmp_path / "run")
    before = sorted(p.name for p in run_dir.iterdir())
    monkeypatch.chdir(tmp_path)
    res = cli.invoke(app, ["report", str(run_dir)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "report" / "index.html").is_file()
    assert sorted(p.name for p in run_dir.iterdir()) == before


# ------------------------------------------------------------------ damaged records
@pytest.mark.parametrize(("summary", "metrics", "needle"), [
    ({"final": "garbage", "rounds_done": 1}, None, "summary.json: damaged (final"),
    ({"rounds_done": "x"}, None, "summary.json: damaged (rounds_done"),
    (None, b"\x00\xff\x00garbage", "metrics.csv: damaged"),
], ids=["summary-final", "summary-rounds", "metrics-binary"])
def test_report_names_the_damaged_record(tmp_path: Path, summary: Any, metrics: bytes | None,
                                         needle: str) -> None:
    run_dir = _fake_run(tmp_path / "run", summary,
                        **({"metrics": metrics} if metrics is not None else {}))
    message = one_line_exit_2(["report", str(run_dir), "--out", str(tmp_path / "rep")])
    assert needle in message


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"best": {"round": "x"}}'],
                         ids=["truncated", "a-list", "round-not-a-number"])
def test_export_best_names_a_damaged_summary(tmp_path: Path, content: str) -> None:
    run_dir = _fake_run(tmp_path / "run", content)
    message = one_line_exit_2(["export", str(run_dir), "--best", "--out",
                               str(tmp_path / "m.safetensors")])
    assert f"{run_dir / 'summary.json'}: damaged" in message


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"scorer": "random"}',
                                     b'{"scorer": "random", "keep": "top", '
                                     b'"train_ratio": "x"}'],
                         ids=["truncated", "binary", "keys-missing", "ratio-not-a-number"])
def test_prune_resume_names_a_damaged_options_file(tmp_path: Path, content: bytes) -> None:
    root = tmp_path / "prune"
    root.mkdir()
    (root / "prune.json").write_bytes(content)
    (root / "config.yaml").write_text("rounds: 1\n")
    message = one_line_exit_2(["prune", "--resume", str(root)])
    assert f"{root / 'prune.json'}: damaged" in message


# ------------------------------------------------------------------ code, processes, files
def test_import_of_a_module_that_exits(tmp_path: Path) -> None:
    mod = tmp_path / "exiter.py"
    mod.write_text("import sys\nsys.exit(0)\n")
    with pytest.raises(UserError, match=r"called sys.exit\(0\)"):
        import_plugin(str(mod))


def test_a_plugin_cannot_replace_a_builtin_model_silently(tmp_path: Path) -> None:
    from fedweave.models import MODELS, register_model

    builtin = MODELS.get("logistic")

    def shadow(cfg: ModelConfig, shape: tuple[int, ...], classes: int) -> torch.nn.Module:
        raise AssertionError("never built")

    shadow.__module__ = "someone_elses_plugin"
    with pytest.raises(UserError, match=r"'logistic', which fedweave.models.small already"):
        register_model("logistic")(shadow)
    assert MODELS.get("logistic") is builtin
    try:
        register_model("logistic", override=True)(shadow)
        assert MODELS.get("logistic") is shadow
    finally:
        register_model("logistic", override=True)(builtin)


def test_procs_above_the_machine(tmp_path: Path) -> None:
    message = one_line_exit_2(["run", "--procs", "100000", "--out", str(tmp_path)])
    assert "--procs 100000" in message and "four per core" in message


def test_binary_notify_urls_file(tmp_path: Path) -> None:
    from fedweave.records.notify import notify_urls

    urls = tmp_path / "urls"
    urls.write_bytes(b"\xff\xfe\x00\x01binary")
    cfg = load_config(None, [f"notify.urls_file={urls}"])
    with pytest.raises(UserError, match=r"notify.urls_file .*not a text file"):
        notify_urls(cfg, {})


def test_a_deadline_that_drops_every_client_is_refused() -> None:
    from fedweave.runner import run

    cfg = load_config(None, ["rounds=2", "model.name=logistic", "data.nodes=3",
                             "clock.deadline_s=1e-9", "output.plots=false"])
    with pytest.raises(UserError, match=r"clock.deadline_s=1e-09: no member of the first"):
        run(cfg, write=False)


def test_huge_noise_multiplier_warns_once(caplog: Any) -> None:
    from fedweave.privacy.accountant import epsilon

    with caplog.at_level("WARNING"):
        for steps in (1, 2, 3):
            assert epsilon("rdp", "poisson", 1e30, steps, 1e-5, 10, 3) == 0.0
    lines = [r for r in caplog.records if "1e+30" in r.getMessage() or "Renyi" in
             r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    with pytest.raises(UserError, match="noise_multiplier=1e\\+30"):
        epsilon("rdp", "fixed", 1e30, 1, 1e-5, 10, 3)


def test_keys_without_effect_in_engine_output_notify_clock_warn_once() -> None:
    from fedweave.config.no_effect import warn_no_effect

    cfg = load_config(None, ["engine.name=loop", "engine.chunk=4", "output.keep_every=5",
                             "notify.every=3", "train.local_steps=2", "train.local_epochs=3"])
    peers = load_config(None, ["algorithm.name=dsgd", "clock.crash_rounds=2"])
    found = " | ".join(warn_no_effect(cfg) + warn_no_effect(peers))
    for key in ("engine.chunk", "output.keep_every", "notify.every", "clock.crash_rounds",
                "train.local_epochs"):
        assert f"{key} has no effect" in found, found
