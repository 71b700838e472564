"""The simulation core: the scheduler driving federated rounds (stragglers, client dropout),
aggregators, client objectives and per-sample outputs, model slices, pipelines and plugins."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fedweave.aggregators import AGGREGATORS, build_aggregator
from fedweave.config import AggregatorConfig
from fedweave.context import build_context
from fedweave.core.population import ParamLayout, gather_slice, scatter_slice, slice_index
from fedweave.errors import UserError
from fedweave.models import build_model
from fedweave.runner import run
from fedweave.sim.clock import job_time, node_profiles
from fedweave.training.batches import local_steps
from fedweave.training.objectives import DataLoss, Objective
from fedweave.training.trainer import LocalTrainer
from fedweave.workflows.stages import Pipeline, Stage, StageContext, train_stage
from tests.conftest import latest_state, small_config

# ----------------------------------------------------------------------------- the clock


def _round_times(res) -> list[float]:  # type: ignore[no-untyped-def]
    rows = [r["sim_time"] for r in res.history]
    return [b - a for a, b in zip([0.0, *rows], rows, strict=False)]


def test_sync_round_time_is_the_slowest_members_job() -> None:
    """Equal speeds: every round lasts one job (download + compute + upload); one slow client
    (speed factor 0.1): every round lasts that client's job."""
    base = ("rounds=3", "clock.seconds_per_sample=0.01", "clock.bandwidth_up=1e6",
            "clock.bandwidth_down=4e6", "data.partition=iid")
    equal = run(small_config(*base), write=False)
    cfg = equal.algorithm.ctx.config  # type: ignore[union-attr]
    sizes = equal.algorithm.ctx.data.sizes  # type: ignore[union-attr]
    nbytes = equal.algorithm.ctx.model_bytes  # type: ignore[union-attr]
    samples = local_steps(cfg.train, sizes) * sizes.clamp(max=cfg.train.batch_size)
    profile = node_profiles(cfg.clock, cfg.data.nodes, cfg.seed)
    jobs = job_time(profile, torch.arange(cfg.data.nodes), samples.double(), nbytes, nbytes)
    assert equal.summary["sim_time_s"] == pytest.approx(3 * float(jobs.max()), rel=1e-12)
    slow = run(small_config(*base, "clock.speeds=[1,1,1,1,0.1]"), write=False)
    slow_job = float(job_time(node_profiles(slow.algorithm.ctx.config.clock, 5, 0), 4,  # type: ignore[union-attr]
                              float(samples[4]), nbytes, nbytes))
    assert _round_times(slow) == pytest.approx([slow_job] * 3, rel=1e-9)
    assert slow_job > 5 * float(jobs.max())


def test_client_dropout_drops_about_that_share_and_resumes_identically(tmp_path: Path) -> None:
    over = ("data.nodes=40", "algorithm.clients_per_round=20", "rounds=6",
            "clock.client_dropout=0.3", f"output.dir={tmp_path}")
    a = run(small_config(*over, "name=a"))
    dropped = [r["clients_dropped"] for r in a.history]
    share = sum(dropped) / (20 * 6)
    assert 0.2 <= share <= 0.4, dropped
    assert a.summary["bytes_up"] < a.summary["bytes_down"]  # dropped clients upload nothing
    b = run(small_config(*over, "name=b"))
    assert [r["clients_dropped"] for r in b.history] == dropped
    assert b.summary["final"]["test_loss"] == a.summary["final"]["test_loss"]

    class Killed(Exception):
        pass

    def kill(r: int, total: int, row: dict[str, float]) -> None:
        if r == 3:
            raise Killed

    with pytest.raises(Killed):
        run(small_config(*over, "name=c"), progress=kill)
    resumed = run(resume=next(tmp_path.glob("c-*")))
    assert [r["clients_dropped"] for r in resumed.history] == dropped
    assert resumed.summary["final"] == a.summary["final"]


def test_client_dropout_is_refused_where_it_cannot_act() -> None:
    with pytest.raises(UserError, match="client_dropout applies to federated"):
        small_config("algorithm.name=dsgd", "clock.client_dropout=0.2")
    with pytest.raises(UserError, match=r"clock\.asynchronous"):
        small_config("clock.asynchronous=true")
    with pytest.raises(UserError, match=r"topology\.name applies to decentralized"):
        small_config("topology.name=torus")


# ----------------------------------------------------------------------------- aggregators


def test_aggregators_equal_their_definitions() -> None:
    rows = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    w = torch.tensor([1.0, 1.0, 2.0])
    center = torch.zeros(2)
    mean = build_aggregator(AggregatorConfig(name="mean"), "weighted_mean")
    wmean = build_aggregator(AggregatorConfig(), "weighted_mean")
    assert torch.allclose(mean(rows, w, center), torch.tensor([3.0, 3.0]))
    assert torch.allclose(wmean(rows, w, center), torch.tensor([14 / 4, 10 / 4]))
    assert {"mean", "weighted_mean"} <= set(AGGREGATORS.names())


def test_aggregator_choice_changes_fedavg_and_is_recorded() -> None:
    over = ("data.partition=quantity", "data.sigma=1.5")
    weighted = run(small_config(*over), write=False).summary["final"]["test_loss"]
    plain = run(small_config(*over, "aggregator.name=mean"), write=False).summary
    assert plain["final"]["test_loss"] != weighted
    with pytest.raises(UserError, match="unknown aggregator 'medain'"):
        small_config("aggregator.name=medain")
    with pytest.raises(UserError, match="does not aggregate"):
        small_config("algorithm.name=gossip", "aggregator.name=mean")  # dsgd takes one


# ----------------------------------------------------------------------------- objectives


class LabelSmoothing(DataLoss):
    """A client objective defined outside the package: CE with label smoothing ε."""

    def __init__(self, eps: float) -> None:
        self.eps = eps

    def per_sample(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
                   ) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="none", label_smoothing=self.eps)


def test_a_test_file_objective_trains_equally_through_both_engines() -> None:
    outs = []
    for backend in ("loop", "vectorized"):
        ctx = build_context(small_config(f"engine.name={backend}"))
        trainer = LocalTrainer(ctx.engine, ctx.data, ctx.config.train)
        nodes = torch.arange(5)
        start = ctx.init_params.expand(5, -1)
        outs.append([trainer.train(nodes, start, {}, 0, 0.1, Objective(data=loss))
                     for loss in (LabelSmoothing(0.2), None)])
    (ls_loop, ce_loop), (ls_vec, _) = outs
    torch.testing.assert_close(ls_loop.params, ls_vec.params, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ls_loop.loss, ls_vec.loss, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ls_loop.params, ce_loop.params)  # the term acted


def test_per_sample_outputs_match_autograd_one_sample_at_a_time() -> None:
    for backend in ("loop", "vectorized"):
        ctx = build_context(small_config(f"engine.name={backend}"))
        data, engine = ctx.data, ctx.engine
        idx = data.train_idx[0][:7]
        x, y = data.gather(idx)
        p = ctx.init_params
        losses = engine.sample_losses(p.unsqueeze(0), {}, x, y)  # type: ignore[attr-defined]
        grads = engine.sample_grads(p, {}, x, y)  # type: ignore[attr-defined]
        last = [n for n in ctx.layout.names if n.startswith(ctx.layout.names[-1][:2])]
        some = engine.sample_grads(p, {}, x, y, names=last)  # type: ignore[attr-defined]
        dx = engine.input_grads(p, {}, x, y)  # type: ignore[attr-defined]
        model = ctx.model.eval()
        torch.nn.utils.vector_to_parameters(p, model.parameters())
        for b in range(len(y)):
            xb = x[b: b + 1].clone().requires_grad_(True)
            loss = F.cross_entropy(model(xb), y[b: b + 1])
            g = torch.autograd.grad(loss, [*model.parameters(), xb])
            torch.testing.assert_close(losses[0, b], loss.detach())
            flat = torch.cat([t.reshape(-1) for t in g[:-1]])
            torch.testing.assert_close(grads[b], flat, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(dx[b], g[-1][0], rtol=1e-4, atol=1e-6)
        assert some.shape[1] == sum(s.numel() for n, s in zip(ctx.layout.names,
                                                               ctx.layout.shapes, strict=True)
                                    if n in last)


# ----------------------------------------------------------------------------- model shapes


def test_width_sliced_submodel_maps_back_into_the_right_slices() -> None:
    cfg = small_config("model.hidden=[8, 6]")
    sub_cfg = cfg.model.model_copy(update={"hidden": [4, 3]})
    full = build_model(cfg.model, (1, 8, 8), 10)
    sub = build_model(sub_cfg, (1, 8, 8), 10)
    lf, ls = ParamLayout.of(full), ParamLayout.of(sub)
    index = slice_index(lf, ls)
    assert len(index) == ls.total and len(index.unique()) == ls.total
    flat = torch.arange(lf.total, dtype=torch.float64)
    piece = gather_slice(flat, index)
    views = ls.views(piece)
    full_views = lf.views(flat)
    for name in ls.names:  # the leading box of every parameter
        box = tuple(slice(0, s) for s in views[name].shape)
        assert torch.equal(views[name], full_views[name][box]), name
    back = scatter_slice(torch.zeros(lf.total, dtype=torch.float64), index, piece)
    assert torch.equal(back[index], piece) and float(back.sum()) == float(piece.sum())
    # a context builds and trains a second shape beside the main one
    ctx = build_context(cfg)
    shape = ctx.shape("half", sub_cfg)
    assert shape.layout.total == ls.total and ctx.shape("half") is shape
    out = shape.trainer.train(torch.arange(2), shape.init_params.expand(2, -1), {}, 0, 0.1)
    assert out.params.shape == (2, ls.total)
    with pytest.raises(ValueError, match="does not fit"):
        slice_index(ls, lf)


# ----------------------------------------------------------------------------- pipelines


class Boom(Exception):
    pass


def _two_stage(cfg_a, cfg_b, calls: list[str], kill_at: int | None) -> list[Stage]:  # type: ignore[no-untyped-def]
    from fedweave.callbacks import Callback

    class Kill(Callback):
        def on_round(self, runner, r, result):  # type: ignore[no-untyped-def]
            if kill_at is not None and r == kill_at:
                raise Boom

    def first(sc: StageContext) -> dict:
        calls.append("first")
        return train_stage(sc, cfg_a).summary["final"]

    def second(sc: StageContext) -> dict:
        calls.append("second-resume" if sc.resume else "second")
        assert "first" in sc.results
        return train_stage(sc, cfg_b, callbacks=[Kill()]).summary["final"]

    return [Stage("first", first), Stage("second", second)]


def test_pipeline_killed_in_stage_two_resumes_stage_two_only(tmp_path: Path) -> None:
    cfg_a = small_config(f"output.dir={tmp_path}", "rounds=2", "name=pipe")
    cfg_b = small_config(f"output.dir={tmp_path}", "rounds=4", "train.lr=0.1")
    calls: list[str] = []
    whole = Pipeline.create(cfg_a, _two_stage(cfg_a, cfg_b, calls, None)).run()
    calls.clear()
    pipe = Pipeline.create(cfg_a.model_copy(update={"name": "killed"}),
                           _two_stage(cfg_a, cfg_b, calls, 2))
    with pytest.raises(Boom):
        pipe.run()
    assert calls == ["first", "second"]
    calls.clear()
    again = Pipeline.open(pipe.root, _two_stage(cfg_a, cfg_b, calls, None)).run()
    assert calls == ["second-resume"]  # stage 1 is not run again
    assert again == whole
    assert json.loads((pipe.root / "summary.json").read_text())["stages"]["second"] == \
        whole["second"]
    rows = list(csv.DictReader((pipe.root / "second" / "metrics.csv").open()))
    assert sorted({int(r["round"]) for r in rows}) == [1, 2, 3, 4]  # each round once
    assert set(latest_state(pipe.root / "second")) == set(latest_state(pipe.root / "first"))


# ----------------------------------------------------------------------------- plugins

PLUGIN = '''
"""A user's plugin: a model and an algorithm (FedAvg with a label-smoothing objective)."""
from typing import Literal

import torch.nn.functional as F
from torch import nn

from fedweave import register_algorithm, register_model
from fedweave.algorithms.federated.fedavg import FedAvg, FedAvgConfig
from fedweave.training.objectives import DataLoss, Objective


@register_model("tiny_mlp")
def tiny_mlp(cfg, input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, num_classes))


class Smooth(DataLoss):
    def per_sample(self, logits, y, idx):
        return F.cross_entropy(logits, y, reduction="none", label_smoothing=0.1)


class SmoothConfig(FedAvgConfig):
    name: Literal["fedavg_smooth"] = "fedavg_smooth"


@register_algorithm("fedavg_smooth", SmoothConfig)
class FedAvgSmooth(FedAvg):
    def round(self, r):
        plan = self.plan(r)
        x = self.server.x.detach()
        start, buffers = self.start(len(plan.clients))
        local = self.ctx.trainer.train(plan.clients, start, buffers, r, self.ctx.lr(r),
                                       Objective(data=Smooth()))
        self.server.step(x - self.aggregate(local.params, local.num_samples, x))
        return self.result(plan, local)
'''


def _fedweave(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "fedweave", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=240)


@pytest.mark.slow
def test_plugin_model_and_algorithm_from_the_cli_on_one_and_two_processes(tmp_path: Path
                                                                         ) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "myplugin.py").write_text(textwrap.dedent(PLUGIN))
    sets = ["--set", "model.name=tiny_mlp", "--set", "algorithm.name=fedavg_smooth",
            "--set", "rounds=3", "--set", "data.nodes=4", "--set", "output.plots=false",
            "--set", "engine.name=loop"]
    one = _fedweave("run", "--import", "myplugin", *sets, "--out", "one", cwd=plugins)
    assert one.returncode == 0, one.stderr[-2000:]
    two = _fedweave("run", "--procs", "2", "--import", "myplugin", *sets, "--out", "two",
                    cwd=plugins)
    assert two.returncode == 0, two.stderr[-2000:]
    runs = [next((plugins / out).iterdir()) for out in ("one", "two")]
    finals = [json.loads((d / "summary.json").read_text())["final"] for d in runs]
    assert finals[0]["test_loss"] == finals[1]["test_loss"]
    assert "myplugin" in (runs[0] / "config.yaml").read_text()  # recorded: resume imports it
    missing = _fedweave("run", "--set", "model.name=tiny_mlp", cwd=plugins)
    assert missing.returncode == 2 and "unknown model 'tiny_mlp'" in missing.stderr
    bad = _fedweave("run", "--import", "not_a_module_xyz", cwd=plugins)
    assert bad.returncode == 2 and "module not found" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_calibrated_engine_is_built_once(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    """``engine.name: auto`` times the loop and vectorized engines; the run then trains with
    the one chosen (no third engine is built) and the trainer wraps it."""
    import fedweave.context as context
    import fedweave.training.select as select

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no stored decision: measure
    monkeypatch.setattr(select, "_DECISIONS", {})
    built: list[str] = []
    real = context.build_engine

    def counted(backend: str, *args: object, **kwargs: object) -> object:
        built.append(backend)
        return real(backend, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(context, "build_engine", counted)
    ctx = build_context(small_config("model.name=cnn", "model.norm=group",
                                     "engine.name=auto"))
    assert ctx.calibration["source"] == "measured"
    assert built == []  # the calibration's engine is the run's
    assert ctx.local_engine.name == ctx.backend and ctx.local_engine.model is ctx.model
    assert ctx.trainer.engine is ctx.local_engine
    ctx.shape("half", ctx.config.model.model_copy(update={"width": 0.5}))  # others: built
    assert built == [ctx.backend]
