"""Personalised methods: each against a property its paper states, exact resume, engines
agree, 1,000 clients with only the cohort's rows, refusals in one line."""

from __future__ import annotations

import json

import pytest
import torch

from fedweave.context import build_context
from fedweave.errors import UserError
from fedweave.runner import build_algorithm, run
from tests.conftest import resumes_exactly, small_config

METHODS = ["fedper", "fedrep", "fedbn", "lg_fedavg", "ditto", "pfedme", "per_fedavg", "apfl"]
CNN = ["model.name=cnn", "model.width=0.125"]  # fedbn needs normalisation layers
FAST = ["algorithm.head_epochs=1"]  # fedrep's 10 head epochs are the paper's, not a test's


def cfg(name: str, *extra: str):
    more = [*(CNN if name == "fedbn" else []), *(FAST if name == "fedrep" else [])]
    return small_config(f"algorithm.name={name}", "data.nodes=6", "algorithm.clients_per_round=3",
                        "data.client_test_fraction=0.2", "engine.name=loop", *more, *extra)


def algo_after(config, rounds: int = 1):
    algo = build_algorithm(build_context(config))
    for r in range(rounds):
        algo.round(r)
    return algo


def fedavg_local(config):
    """FedAvg's round 0: the cohort's trained rows and the new global model."""
    algo = algo_after(config)
    ctx = algo.ctx
    clients = algo.plan(0).clients  # the same cohort (drawn from (seed, round))
    start, buffers = build_algorithm(ctx).start(len(clients))
    local = ctx.trainer.train(clients, start, buffers, 0, ctx.lr(0))
    return algo, clients, local


@pytest.mark.parametrize(("name", "personal_is_head"), [("fedper", True), ("lg_fedavg", False)])
def test_first_round_shares_fedavgs_update_on_the_shared_part(name, personal_is_head):
    """With every head still the global one, round 0 is FedAvg's: the shared part becomes
    FedAvg's new global part, the personal part of each member is its FedAvg local row."""
    fed, clients, local = fedavg_local(cfg("fedavg"))
    algo = algo_after(cfg(name))
    mask = algo.mask
    head = algo.ctx.layout.names[-1].rsplit(".", 1)[0] + "."
    assert head == "3." and bool(mask[-10:].all()) == personal_is_head
    x = algo.server.x
    assert torch.equal(x[~mask], fed.server.x[~mask])
    assert torch.equal(x[mask], algo.ctx.init_params[mask])  # never averaged
    assert torch.equal(algo.store.gather(clients), local.params[:, mask])


def test_fedbn_keeps_normalisation_parameters_and_statistics_local():
    fed, clients, local = fedavg_local(cfg("fedavg", *CNN, "model.norm=batch"))
    algo = algo_after(cfg("fedbn", "model.norm=batch"))
    mask = algo.mask
    assert 0 < int(mask.sum()) < len(mask)
    assert torch.equal(algo.server.x[~mask], fed.server.x[~mask])
    assert torch.equal(algo.server.x[mask], algo.ctx.init_params[mask])
    params, buffers = algo.personal_models(clients)
    assert torch.equal(params, local.params.where(mask, algo.server.x))
    assert algo.buffer_names and all(torch.equal(buffers[k], local.buffers[k])
                                     for k in algo.buffer_names)
    assert all(torch.equal(algo.buffers[k], algo.ctx.init_buffers[k]) for k in algo.buffer_names)


def test_fedbn_refuses_a_model_without_normalisation():
    with pytest.raises(UserError, match="no normalisation layers"):
        algo_after(cfg("fedbn", "model.name=mlp", "model.norm=none"), 0)


def test_fedrep_phases_train_only_their_part():
    algo = algo_after(cfg("fedrep"), 0)
    clients = torch.tensor([0, 3])
    params, buffers = algo.personal_models(clients)
    head = algo.mask
    out = algo.phase(0, clients, params, buffers, 1.0, head, 7)
    assert torch.equal(out.params[:, ~head], params[:, ~head])
    assert not torch.equal(out.params[:, head], params[:, head])
    out = algo.phase(0, clients, params, buffers, 1.0, ~head, 0)
    assert torch.equal(out.params[:, head], params[:, head])


def test_ditto_global_model_is_fedavg_and_lambda_pulls_the_personal_model():
    fed = algo_after(cfg("fedavg"), 2)
    dist = {}
    for lam in (0.0, 1.0, 10.0):
        algo = algo_after(cfg("ditto", f"algorithm.lam={lam}"), 2)
        assert torch.equal(algo.server.x, fed.server.x)  # the global model is FedAvg's
        clients = torch.arange(6)[algo.store.seen(torch.arange(6))]
        dist[lam] = float((algo.store.gather(clients) - algo.server.x).norm())
    assert dist[0.0] > dist[1.0] > dist[10.0]


def test_ditto_without_pull_trains_the_personal_models_as_fedavgs_local_rows():
    _, clients, local = fedavg_local(cfg("fedavg"))
    algo = algo_after(cfg("ditto", "algorithm.lam=0"))
    assert torch.equal(algo.store.gather(clients), local.params)


def test_apfl_with_alpha_zero_is_fedavg():
    fed = run(cfg("fedavg", "rounds=2"), write=False)
    ap = run(cfg("apfl", "rounds=2", "algorithm.alpha=0", "algorithm.learn_alpha=false"),
             write=False)
    assert torch.equal(ap.algorithm.server.x, fed.algorithm.server.x)  # type: ignore[union-attr]
    assert ap.summary["final"]["personal_test_acc"] == fed.summary["final"]["personal_test_acc"]


def test_apfl_learns_alpha_within_bounds():
    algo = algo_after(cfg("apfl"), 2)
    rows = algo.store.gather(torch.arange(6)[algo.store.seen(torch.arange(6))])
    alpha = rows[:, -1]
    assert bool(((alpha >= 0) & (alpha <= 1)).all()) and bool((alpha != 0.5).any())


def test_pfedme_server_mixes_by_beta():
    x0 = algo_after(cfg("pfedme"), 0).server.x.clone()
    full = algo_after(cfg("pfedme")).server.x
    half = algo_after(cfg("pfedme", "algorithm.beta=0.5")).server.x
    assert torch.allclose(half, 0.5 * x0 + 0.5 * full, atol=1e-6)


def test_pfedme_personal_model_solves_the_moreau_envelope_near_w():
    """A larger λ keeps θ̂ closer to the local model (the envelope's proximal point)."""
    far = algo_after(cfg("pfedme", "algorithm.lam=1"))
    near = algo_after(cfg("pfedme", "algorithm.lam=15"))
    seen = torch.arange(6)[far.store.seen(torch.arange(6))]
    assert float((near.store.gather(seen) - near.server.x).norm()) < \
        float((far.store.gather(seen) - far.server.x).norm())


def test_per_fedavg_personal_model_is_one_adaptation_step():
    algo = algo_after(cfg("per_fedavg"))
    params, _ = algo.personal_models(torch.tensor([1, 4]))
    step = params - algo.server.x
    assert float(step.norm()) > 0
    small = algo_after(cfg("per_fedavg", "algorithm.alpha=0.001"))
    step_small = small.personal_models(torch.tensor([1, 4]))[0] - small.server.x
    assert float(step_small.norm()) < float(step.norm())
    hf = algo_after(cfg("per_fedavg", "algorithm.variant=hf"))
    assert not torch.equal(hf.server.x, algo.server.x)
    assert bool(torch.isfinite(hf.server.x).all())


@pytest.mark.parametrize("name", METHODS)
def test_killed_and_resumed_run_ends_with_the_same_numbers(tmp_path, name):
    resumes_exactly(tmp_path, lambda *a: cfg(name, *a), rounds=3)


@pytest.mark.parametrize("name", METHODS)
def test_loop_and_vectorized_engines_agree(name):
    res = {}
    for backend in ("loop", "vectorized"):
        res[backend] = run(cfg(name, "rounds=2", f"engine.name={backend}"), write=False)
    a, b = (res[k].algorithm.server.x for k in ("loop", "vectorized"))  # type: ignore[union-attr]
    assert torch.allclose(a, b, atol=1e-4)
    pa, pb = (res[k].summary["final"]["personal_test_acc"] for k in ("loop", "vectorized"))
    assert abs(pa - pb) < 0.02


@pytest.mark.parametrize("name", ["fedper", "ditto", "apfl"])
def test_a_thousand_clients_hold_only_the_cohorts_rows(name):
    config = small_config(f"algorithm.name={name}", "data.nodes=1000", "data.partition=iid",
                          "data.min_samples=1", "data.val_fraction=0",
                          "algorithm.clients_per_round=10", "rounds=2",
                          "output.client_eval=never")
    algo = algo_after(config, 2)
    store = algo.store
    assert 10 <= len(store) <= 20
    assert store.nbytes() == 4 * 1000 + store.rows.numel() * 4
    assert len(store.rows) <= 32  # grown by doubling from 16, never to 1,000 rows


@pytest.mark.parametrize(("extra", "match"), [
    (["algorithm.name=ditto", "privacy.level=client"], "privacy accounting"),
    (["algorithm.name=apfl", "launcher.name=distributed"], "own local update"),
])
def test_unsupported_settings_are_refused_in_one_line(extra, match):
    with pytest.raises(UserError, match=match):
        small_config(*extra)


def test_whole_personal_models_refuse_batchnorm():
    with pytest.raises(UserError, match=r"model\.norm=group"):
        algo_after(cfg("ditto", *CNN, "model.norm=batch"), 0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fedper", "ditto"])
def test_two_processes_end_with_the_single_process_numbers(tmp_path, name):
    import subprocess
    import sys

    finals = []
    for procs in (1, 2):
        out = tmp_path / f"p{procs}"
        args = [sys.executable, "-m", "fedweave", "run", "--procs", str(procs),
                "--set", f"algorithm.name={name}", "--set", "rounds=2", "--set", "data.nodes=6",
                "--set", "algorithm.clients_per_round=4", "--set", "model.name=mlp",
                "--set", "data.client_test_fraction=0.2", "--set", "engine.name=loop",
                "--set", f"output.dir={out}", "--set", "output.plots=false",
                "--set", "output.progress=false"]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        summary = json.loads(next(out.glob("*/summary.json")).read_text())
        finals.append({k: v for k, v in summary["final"].items() if k != "wall_time"})
    assert finals[0] == finals[1] and "personal_test_acc" in finals[0]
