"""Classic federated baselines (FedNova, FedDyn, MOON, q-FFL): each against a property its
paper states, engine and resume equality."""

from __future__ import annotations

import json

import pytest
import torch

from fedweave.config import load_config
from fedweave.errors import UserError
from fedweave.runner import run
from tests.conftest import latest_state, small_config
from tests.conftest import resumes_exactly as shared_resumes_exactly

SKEW = ["data.partition=quantity", "data.sigma=1.5"]


def final(*overrides: str) -> torch.Tensor:
    res = run(small_config(*overrides), write=False)
    return res.algorithm.models()[0]


def resumes_exactly(tmp_path, *overrides: str) -> None:
    shared_resumes_exactly(tmp_path, small_config, *overrides)


# ---------------------------------------------------------------------------------- FedNova
def test_fednova_equals_fedavg_when_every_client_takes_the_same_steps():
    common = [*SKEW, "train.local_steps=3", "train.momentum=0.5"]
    assert torch.equal(final(*common, "algorithm.name=fednova"),
                       final(*common, "algorithm.name=fedavg"))


def test_fednova_differs_from_fedavg_with_heterogeneous_steps():
    """local_epochs over unequal shards: τ_i = ⌈n_i/B⌉ differ, the updates are rescaled."""
    common = [*SKEW, "train.batch_size=16"]
    res = run(small_config(*common, "algorithm.name=fednova"), write=False)
    steps = torch.tensor([len(s) for s in res.algorithm.ctx.data.train_idx]).div(16).ceil()
    assert len(steps.unique()) > 1  # the steps really are heterogeneous
    avg = final(*common, "algorithm.name=fedavg")
    assert not torch.allclose(res.algorithm.models()[0], avg, atol=1e-4)
    assert res.summary["final"]["test_acc"] > 0.6


def test_fednova_norm_a_is_the_papers_momentum_sum():
    from fedweave.algorithms.federated.fednova import norm_a
    rho, tau = 0.9, 5
    want = sum(sum(rho ** k for k in range(t)) for t in range(1, tau + 1))
    assert float(norm_a(torch.tensor([tau]), rho)) == pytest.approx(want, rel=1e-12)
    assert float(norm_a(torch.tensor([tau]), 0.0)) == tau


def test_fednova_removes_the_objective_inconsistency_of_fedavg():
    """Wang et al. 2020's objective inconsistency: quadratics F_i = ½(x − c_i)², client i runs
    τ_i GD steps of size η. FedAvg's fixed point weights c_i by 1 − (1−η)^τ_i ≈ ητ_i (the
    clients that step more win: ≈ 20/21 here); FedNova's is the optimum Σ p_i c_i = 0.5 up to
    O(ητ)."""
    from fedweave.algorithms.federated.fednova import normalised
    c = torch.tensor([[0.0], [1.0]], dtype=torch.float64)
    n = torch.tensor([1.0, 1.0], dtype=torch.float64)
    steps = torch.tensor([1, 20])
    eta = 0.001  # small steps: (1 − η)^τ ≈ 1 − ητ, the paper's regime
    opt = float((n @ c) / n.sum())

    def fixed_point(nova: bool) -> float:
        x = torch.zeros(1, dtype=torch.float64)
        for _ in range(3000):
            y = torch.stack([x - (1 - (1 - eta) ** int(t)) * (x - c[i])
                             for i, t in enumerate(steps)])
            rows = normalised(x, y, steps, n) if nova else y
            x = (n / n.sum()) @ rows
        return float(x)

    avg, nova = fixed_point(False), fixed_point(True)
    assert abs(avg - opt) > 0.4      # FedAvg: ≈ 20/21 (weighted by steps)
    assert abs(nova - opt) < 0.005   # FedNova: the optimum 0.5


def test_fednova_refuses_adam_in_one_line():
    with pytest.raises((UserError, ValueError), match=r"train\.optimizer=sgd"):
        load_config(None, ["algorithm.name=fednova", "train.optimizer=adam"])


def test_fednova_loop_equals_vectorized():
    common = [*SKEW, "train.batch_size=16", "algorithm.name=fednova", "rounds=2"]
    a = final(*common, "engine.name=loop")
    b = final(*common, "engine.name=vectorized")
    assert torch.allclose(a, b, atol=1e-5)


def test_fednova_resumes_exactly(tmp_path):
    resumes_exactly(tmp_path, *SKEW, "train.batch_size=16", "algorithm.name=fednova",
                    "train.momentum=0.5", "algorithm.fraction=0.6")


# ---------------------------------------------------------------------------------- FedDyn
CONVEX = ["model.name=logistic", "data.partition=classes", "data.classes_per_node=2",
          "train.batch_size=2048", "train.local_steps=20", "train.lr=0.1",
          "train.l2_lambda=0.01", "rounds=40", "output.eval_every=40"]


def federated_objective(ctx, theta: torch.Tensor) -> torch.Tensor:
    """(1/m) Σ_i [mean CE over shard i + ½λ‖θ‖²] (λ = 0.01): the problem FedDyn solves."""
    from torch.func import functional_call

    from fedweave.core.population import ParamLayout
    model = ctx.trainer.engine.model
    layout = ParamLayout.of(model)
    total = theta.new_zeros(())
    for idx in ctx.data.train_idx:
        xb, yb = ctx.data.gather(idx)
        logits = functional_call(model, layout.views(theta), (xb,))
        total = total + torch.nn.functional.cross_entropy(logits, yb) + 0.005 * (theta ** 2).sum()
    return total / len(ctx.data.train_idx)


def test_feddyn_fixed_point_is_the_global_optimum_where_fedavg_is_biased():
    """Acar et al. 2021: on a convex problem FedDyn's fixed point minimises Σ_i L_i
    whatever the local steps. Strongly convex L2-regularised logistic regression, label skew,
    20 full-batch local steps: FedAvg stops ≈1.2 away from the optimum (client drift), FedDyn
    reaches it (measured: 0.036 after 40 rounds)."""
    dyn = run(small_config(*CONVEX, "algorithm.name=feddyn", "algorithm.alpha=0.1"),
              write=False)
    avg = run(small_config(*CONVEX, "algorithm.name=fedavg"), write=False)
    ctx = dyn.algorithm.ctx
    theta = ctx.init_params.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([theta], max_iter=200, tolerance_grad=1e-10,
                            tolerance_change=1e-14, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = federated_objective(ctx, theta)
        loss.backward()
        return loss

    opt.step(closure)
    star = theta.detach()
    d_dyn = float((dyn.algorithm.models()[0][0] - star).norm())
    d_avg = float((avg.algorithm.models()[0][0] - star).norm())
    assert d_avg > 0.5
    assert d_dyn < 0.1 * d_avg
    with torch.no_grad():
        gap = federated_objective(ctx, dyn.algorithm.models()[0][0]) - \
            federated_objective(ctx, star)
    assert 0 <= float(gap) < 1e-4


def test_feddyn_refuses_a_robust_aggregator():
    with pytest.raises((UserError, ValueError), match="does not aggregate client rows"):
        load_config(None, ["algorithm.name=feddyn", "aggregator.name=median"])


def test_feddyn_loop_equals_vectorized():
    common = [*SKEW, "algorithm.name=feddyn", "rounds=2", "algorithm.fraction=0.6"]
    a = final(*common, "engine.name=loop")
    b = final(*common, "engine.name=vectorized")
    assert torch.allclose(a, b, atol=1e-5)


def test_feddyn_resumes_exactly_with_its_client_state(tmp_path):
    resumes_exactly(tmp_path, "algorithm.name=feddyn", "algorithm.alpha=0.1",
                    "algorithm.fraction=0.6")
    state = latest_state(next(tmp_path.glob("full-*")))
    assert state["client_grads/rows"].shape[0] == 5 and state["h"].abs().sum() > 0


# ---------------------------------------------------------------------------------- q-FFL
def test_qffl_with_q_zero_is_the_unweighted_mean_of_the_clients_models():
    """Li et al. 2020: with q = 0, h_k = L and w⁺ = (1/|S|) Σ_k w̄_k: FedAvg with an
    unweighted average (``aggregator.name=mean``)."""
    common = [*SKEW, "data.nodes=6", "rounds=4", "algorithm.fraction=0.5"]
    q0 = final(*common, "algorithm.name=qffl", "algorithm.q=0")
    avg = final(*common, "algorithm.name=fedavg", "aggregator.name=mean")
    weighted = final(*common, "algorithm.name=fedavg")
    assert torch.allclose(q0, avg, atol=1e-6)
    assert not torch.allclose(q0, weighted, atol=1e-4)  # unequal shards: the weights matter


def test_qffl_step_matches_the_papers_formula_by_hand():
    from fedweave.algorithms.federated.qffl import qfedavg_step
    x = torch.tensor([1.0, 2.0])
    y = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    f = torch.tensor([0.5, 2.0], dtype=torch.float64)
    q, lip = 2.0, 10.0
    dw = lip * (x - y)  # [[10, 0], [0, 20]]
    h = [q * 0.5 * 100 + lip * 0.25, q * 2.0 * 400 + lip * 4.0]  # q F^{q−1}‖Δw‖² + L F^q
    want = (0.25 * dw[0] + 4.0 * dw[1]) / sum(h)
    assert torch.allclose(qfedavg_step(x, y, f, q, lip), want)


def test_larger_q_makes_the_clients_losses_more_uniform():
    """Label skew (2 classes per client): the spread of the clients' training losses
    relative to their mean (std/mean) falls as q grows (measured 0.46, 0.23, 0.10)."""
    common = ["data.partition=classes", "data.classes_per_node=2", "data.nodes=8", "rounds=20",
              "train.lr=0.1", "model.name=logistic", "output.eval_every=20",
              "algorithm.name=qffl"]
    spread = []
    for q in (0, 0.5, 2):
        res = run(small_config(*common, f"algorithm.q={q}"), write=False)
        losses = res.algorithm.client_losses(torch.arange(8))
        spread.append(float(losses.std() / losses.mean()))
    assert spread[0] > 1.5 * spread[1] > 1.5 * 1.5 * spread[2], spread


def test_qffl_refuses_a_robust_aggregator():
    with pytest.raises((UserError, ValueError), match="does not aggregate client rows"):
        load_config(None, ["algorithm.name=qffl", "aggregator.name=median"])


def test_qffl_loop_equals_vectorized():
    common = [*SKEW, "algorithm.name=qffl", "rounds=2"]
    a = final(*common, "engine.name=loop")
    b = final(*common, "engine.name=vectorized")
    assert torch.allclose(a, b, atol=1e-5)


def test_qffl_resumes_exactly(tmp_path):
    resumes_exactly(tmp_path, "algorithm.name=qffl", "algorithm.fraction=0.6",
                    "train.momentum=0.5")


# ---------------------------------------------------------------------------------- MOON
@pytest.mark.parametrize("backend", ["loop", "vectorized"])
def test_moon_with_mu_zero_equals_fedavg_exactly(backend):
    common = ["rounds=2", "algorithm.fraction=0.6", f"engine.name={backend}"]
    moon = final(*common, "algorithm.name=moon", "algorithm.mu=0")
    assert torch.equal(moon, final(*common, "algorithm.name=fedavg"))
    assert not torch.allclose(moon, final(*common, "algorithm.name=moon"), atol=1e-4)


def test_moon_contrastive_loss_is_the_papers_formula_on_a_hand_computed_example():
    """z = x (identity body); z_glob ∥ z (sim 1), z_prev ⊥ z (sim 0), τ = 0.5:
    ℓ_con = −log(e² / (e² + e⁰)) = log(1 + e⁻²) = 0.126928; second sample z_prev = z_glob:
    ℓ_con = log 2."""
    from torch import nn

    from fedweave.training.objectives import ModelContrastive
    from fedweave.training.representation import RepresentationTap
    model = nn.Sequential(nn.Identity(), nn.Linear(2, 3))
    tap = RepresentationTap(model)
    loss = ModelContrastive(mu=2.0, tau=0.5, tap=tap)
    x = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    y = torch.tensor([0, 2])
    idx = torch.tensor([7, 4])
    z_glob = torch.tensor([[0.0, 1.0], [2.0, 0.0]])   # rows for samples 4 and 7
    z_prev = torch.tensor([[0.0, 5.0], [0.0, 1.0]])
    loss.set_targets(torch.tensor([4, 7]), z_glob, z_prev, total=10)
    with tap.on():
        logits = model(x)
        per = loss.per_sample(logits, y, idx)
        mean = loss.mean(logits, y, idx)
    ce = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    con = torch.tensor([0.126928, 0.693147])
    assert torch.allclose(per, ce + 2.0 * con, atol=1e-5)
    assert torch.allclose(mean, (ce + 2.0 * con).mean(), atol=1e-5)
    assert tap.z is None  # cleared when disarmed


def test_moon_keeps_each_clients_last_local_model():
    res = run(small_config("algorithm.name=moon", "rounds=2", "algorithm.fraction=0.4"),
              write=False)
    alg = res.algorithm
    seen = alg.prev.seen(torch.arange(5))
    assert 1 <= int(seen.sum()) <= 4  # only the clients that trained have a row
    rows = alg.prev.gather(torch.arange(5)[seen])
    x = alg.server.x
    assert all(not torch.equal(row, x) for row in rows)


def test_moon_refuses_augmentation_in_one_line():
    with pytest.raises((UserError, ValueError), match=r"data\.augment=false"):
        load_config(None, ["algorithm.name=moon", "data.augment=true"])


def test_moon_loop_equals_vectorized_and_fused():
    common = ["algorithm.name=moon", "rounds=2", "algorithm.fraction=0.6"]
    a = final(*common, "engine.name=loop")
    b = final(*common, "engine.name=vectorized")
    c = final(*common, "engine.name=fused")
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)


def test_moon_resumes_exactly(tmp_path):
    resumes_exactly(tmp_path, "algorithm.name=moon", "algorithm.fraction=0.6",
                    "train.momentum=0.5")


# ---------------------------------------------------------------------------------- all four
@pytest.mark.parametrize(("algo", "extra", "match"), [
    ("fednova", "privacy.level=client", "releases more than one"),
    ("feddyn", "privacy.level=client", "releases more than one"),
    ("qffl", "privacy.level=client", "releases more than one"),
    ("moon", "privacy.level=sample", "privacy.level=sample"),
])
def test_what_a_method_cannot_support_is_refused_in_one_line(algo, extra, match):
    with pytest.raises((UserError, ValueError), match=match) as err:
        load_config(None, [f"algorithm.name={algo}", extra])
    assert "Traceback" not in str(err.value)


def test_client_state_holds_only_the_clients_that_trained():
    """1,000 clients, 5 per round, 2 rounds: the stores hold ≤ 10 rows, not 1,000."""
    common = ["data.nodes=1000", "data.partition=iid", "data.min_samples=1",
              "algorithm.clients_per_round=5", "rounds=2", "output.eval_every=2"]
    for algo, store in (("feddyn", "grads"), ("moon", "prev")):
        res = run(small_config(*common, f"algorithm.name={algo}"), write=False)
        rows = getattr(res.algorithm, store)
        p = res.algorithm.ctx.layout.total
        assert 5 <= len(rows) <= 10
        assert rows.nbytes() <= 4 * 1000 + 16 * p * 4  # the slot index + the first 16 rows


@pytest.mark.slow  # two torchrun launches (~30 s)
@pytest.mark.parametrize("algo", ["fednova", "feddyn", "moon", "qffl"])
def test_two_processes_give_the_single_process_numbers(tmp_path, algo):
    import os
    import subprocess
    import sys
    args = ["--set", f"algorithm.name={algo}", "--set", "rounds=2", "--set", "data.nodes=5",
            "--set", "model.name=mlp", "--set", "model.hidden=[64]", "--set",
            "output.plots=false", "--set", "output.progress=false", "--set",
            "data.partition=quantity", "--set", "data.sigma=1.5", "--set",
            "train.batch_size=16", "--set", "engine.name=vectorized"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for procs in (1, 2):
        cmd = [sys.executable, "-m", "fedweave", "run", *args, "--dir",
               str(tmp_path / f"p{procs}"), "--procs", str(procs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"p{p}" / "summary.json").read_text())["final"]
                for p in (1, 2))
    assert one == two
    a, b = latest_state(tmp_path / "p1"), latest_state(tmp_path / "p2")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
