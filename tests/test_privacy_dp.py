"""Client-level differential privacy (DP-FedAvg): the accountant's ε equals the libraries' own
computation, the server rule equals its definition, noise 0 and clip ∞ reproduce plain FedAvg
bit for bit, ε is recorded per round and in summary.json, and a run stops at a target ε."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from fedweave.config import PrivacyConfig
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.privacy.accountant import epsilon
from fedweave.privacy.client import DPFedAvg, poisson_cohort
from fedweave.rng import torch_generator
from fedweave.runner import run

dp_accounting = pytest.importorskip("dp_accounting", reason="pip install 'fedweave[privacy]'")

BASE = ["rounds=4", "data.nodes=20", "model.name=logistic", "algorithm.clients_per_round=5",
        "output.plots=false", "output.progress=false", "engine.name=loop"]


def test_rdp_epsilon_equals_dp_accounting_for_both_sampling_schemes() -> None:
    from dp_accounting.rdp import RdpAccountant

    for sigma, steps, n, m in ((1.1, 50, 100, 10), (0.8, 7, 1000, 32), (2.0, 300, 60, 6)):
        acc = RdpAccountant()
        acc.compose(dp_accounting.PoissonSampledDpEvent(
            m / n, dp_accounting.GaussianDpEvent(sigma)), steps)
        assert epsilon("rdp", "poisson", sigma, steps, 1e-5, n, m) == acc.get_epsilon(1e-5)
        wor = RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
        wor.compose(dp_accounting.SampledWithoutReplacementDpEvent(
            n, m, dp_accounting.GaussianDpEvent(sigma / 2)), steps)  # replace-one: Δ = 2C
        assert epsilon("rdp", "fixed", sigma, steps, 1e-5, n, m) == wor.get_epsilon(1e-5)
    assert epsilon("rdp", "poisson", 1.0, 0, 1e-5, 10, 1) == 0.0
    assert epsilon("rdp", "poisson", 0.0, 3, 1e-5, 10, 1) == math.inf


@pytest.mark.slow
def test_pld_epsilon_equals_dp_accounting_and_is_tighter_than_rdp() -> None:
    from dp_accounting.pld import PLDAccountant

    pld = PLDAccountant()
    for _ in range(40):  # one release per round, composed as they happen
        pld.compose(dp_accounting.PoissonSampledDpEvent(
            0.05, dp_accounting.GaussianDpEvent(1.2)))
    ours = epsilon("pld", "poisson", 1.2, 40, 1e-5, 100, 5)
    assert ours == pytest.approx(pld.get_epsilon(1e-5), rel=1e-6)
    assert 0.5 < ours <= epsilon("rdp", "poisson", 1.2, 40, 1e-5, 100, 5)


def test_server_rule_clips_sums_noises_and_divides_by_the_expected_cohort() -> None:
    gen = torch.Generator().manual_seed(0)
    center = torch.randn(6, generator=gen, dtype=torch.float64)
    rows = center + torch.randn(3, 6, generator=gen, dtype=torch.float64) * 2
    cfg = PrivacyConfig(level="client", clip=1.5, noise_multiplier=0.7)
    rule = DPFedAvg(cfg, expected=4, seed=9)
    rule.round = 2
    delta = rows - center
    clipped = delta * (1.5 / delta.norm(dim=1, keepdim=True)).clamp(max=1)
    z = torch.randn(6, generator=torch_generator(9, "dp-noise", 2), dtype=torch.float64)
    expect = center + (clipped.sum(0) + 0.7 * 1.5 * z) / 4  # the fourth expected row: Δ = 0
    assert torch.allclose(rule(rows, torch.ones(3), center), expect)


def test_noise_zero_and_clip_infinite_reproduce_plain_fedavg_exactly() -> None:
    fixed = [*BASE, "data.partition=quantity"]  # unequal shards: the mean is unweighted
    plain = run(load_config(None, [*fixed, "aggregator.name=mean"]), write=False)
    dp = run(load_config(None, [*fixed, "privacy.level=client", "privacy.sampling=fixed",
                                "privacy.noise_multiplier=0", "privacy.clip=.inf"]),
             write=False)
    a, _, _ = plain.algorithm.models()  # type: ignore[union-attr]
    b, _, _ = dp.algorithm.models()  # type: ignore[union-attr]
    assert torch.equal(a, b)
    assert dp.summary["final"]["test_loss"] == plain.summary["final"]["test_loss"]
    assert dp.summary["privacy"]["epsilon"] is None  # no noise: no finite ε
    noised = run(load_config(None, [*fixed, "privacy.level=client", "privacy.sampling=fixed",
                                    "privacy.noise_multiplier=0.5"]), write=False)
    c, _, _ = noised.algorithm.models()  # type: ignore[union-attr]
    assert not torch.equal(a, c)


def test_poisson_cohorts_are_seeded_with_the_expected_size() -> None:
    sizes = [len(poisson_cohort(0, r, 100, 0.1)) for r in range(400)]
    assert abs(sum(sizes) / len(sizes) - 10) < 0.5 and len(set(sizes)) > 5
    assert torch.equal(poisson_cohort(0, 3, 100, 0.1), poisson_cohort(0, 3, 100, 0.1))


def test_epsilon_is_recorded_per_round_and_in_the_summary(tmp_path: Path) -> None:
    res = run(load_config(None, [*BASE, f"output.dir={tmp_path}", "privacy.level=client",
                                 "privacy.noise_multiplier=1.5", "privacy.clip=0.5"]))
    run_dir = res.run_dir
    assert run_dir is not None
    rows = [r for r in csv.DictReader((run_dir / "metrics.csv").open())
            if r["metric"] == "epsilon"]
    eps = [float(r["value"]) for r in rows]
    expect = [epsilon("rdp", "poisson", 1.5, r, 1e-5, 20, 5) for r in range(1, 5)]
    assert eps == pytest.approx(expect, rel=1e-12) and eps == sorted(eps)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["privacy"]["epsilon"] == pytest.approx(eps[-1])
    assert summary["privacy"]["releases"] == 4 and summary["privacy"]["accountant"] == "rdp"


def test_delta_and_accountant_change_the_reported_epsilon_only() -> None:
    over = [*BASE, "rounds=2", "privacy.level=client", "privacy.noise_multiplier=1.5"]
    rdp = run(load_config(None, over), write=False)
    loose = run(load_config(None, [*over, "privacy.delta=1e-3"]), write=False)
    pld = run(load_config(None, [*over, "privacy.accountant=pld"]), write=False)
    for other in (loose, pld):
        assert other.summary["final"]["test_loss"] == rdp.summary["final"]["test_loss"]
        assert other.summary["privacy"]["epsilon"] < rdp.summary["privacy"]["epsilon"]
    assert pld.summary["privacy"]["epsilon"] == pytest.approx(
        epsilon("pld", "poisson", 1.5, 2, 1e-5, 20, 5))


def test_a_run_stops_before_the_round_that_would_pass_the_target_epsilon() -> None:
    over = [*BASE, "rounds=30", "privacy.level=client", "privacy.noise_multiplier=1.0"]
    res = run(load_config(None, [*over, "privacy.target_epsilon=5"]), write=False)
    done = res.summary["rounds_done"]
    assert res.summary["stopped_early"] and 1 <= done < 30
    assert res.summary["privacy"]["epsilon"] <= 5 < epsilon("rdp", "poisson", 1.0, done + 1,
                                                             1e-5, 20, 5)
    with pytest.raises(UserError, match="one round already spends"):
        run(load_config(None, [*over, "privacy.target_epsilon=0.5"]), write=False)


def test_privacy_is_refused_where_it_cannot_act() -> None:
    for over, match in (
        (["privacy.level=client", "algorithm.name=scaffold"], "releases more"),
        (["privacy.level=client", "aggregator.name=median"], "remove aggregator.name"),
        (["privacy.level=client", "privacy.clip=.inf"], "noise_multiplier=0"),
        (["privacy.level=client", "privacy.accountant=pld", "privacy.sampling=fixed"],
         "Poisson sampling only"),
        (["privacy.level=client", "algorithm.name=dsgd"], "protects federated clients"),
        (["privacy.noise_multiplier=2"], "privacy.level is null"),
    ):
        with pytest.raises(UserError, match=match):
            load_config(None, over)
