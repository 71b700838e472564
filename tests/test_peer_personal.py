"""Personalisation for peers: D-SGD and gossip with ``algorithm.personal_head`` mix the body
and keep each node's head."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fedweave.algorithms.decentralized.personal import head_columns
from fedweave.errors import UserError
from fedweave.models.base import register_model
from fedweave.runner import run
from tests.conftest import latest_state, resumes_exactly, small_config

#: label skew (2 classes per node): a node's own head beats the consensus model on its data
SKEWED = ["data.partition=classes", "data.classes_per_node=2", "data.nodes=6",
          "model.hidden=[32]", "train.lr=0.1", "rounds=6"]


class AdditiveHead(nn.Module):
    """logits = body(x) + head(x), both Linear: the cross-entropy is jointly convex in (body,
    head), so peers with node-specific heads solve min Σ_i L_i(body + head_i), a convex
    problem."""

    def __init__(self, features: int, classes: int) -> None:
        super().__init__()
        self.body = nn.Linear(features, classes)
        self.head = nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return self.body(x) + self.head(x)


@register_model("test_additive_head", options=())
def _additive(cfg, input_shape, num_classes):  # type: ignore[no-untyped-def]
    return AdditiveHead(int(torch.Size(input_shape).numel()), num_classes)


def body_and_head(res):
    x = res.algorithm.models()[0]
    head = head_columns(res.algorithm.ctx.model, res.algorithm.ctx.layout)
    body = torch.ones(x.shape[1], dtype=torch.bool)
    body[head] = False
    return x[:, body], x[:, head]


def spread(t: torch.Tensor) -> float:
    """Mean distance of the rows to their mean."""
    return float((t - t.mean(0)).norm(dim=1).mean())


def own_val(res) -> tuple[float, float]:
    """Mean over nodes of each node's model on its own validation split: (loss, accuracy)."""
    final = res.summary["final"]
    return final["val_loss"], final["val_acc"]


@pytest.mark.parametrize("algo", ["dsgd", "gossip"])
def test_bodies_agree_heads_stay_personal_and_fit_their_nodes_better(algo):
    common = [*SKEWED, f"algorithm.name={algo}", "topology.name=complete",
              "topology.mixing=uniform"]
    personal = run(small_config(*common, "algorithm.personal_head=true"), write=False)
    mixed = run(small_config(*common), write=False)
    body, head = body_and_head(personal)
    assert spread(head) > 0.5
    if algo == "dsgd":  # W = 11ᵀ/n on the complete graph: bodies equal after every combine
        assert spread(body) < 1e-5
    else:  # pairwise averaging contracts the bodies only
        assert spread(body) < 0.05 * spread(head)
    if algo == "dsgd":  # without personal_head the heads are mixed like the rest
        assert spread(body_and_head(mixed)[1]) < 1e-5
    # each node's own model on its own data: the personal heads fit it far better (measured
    # val loss 0.09 vs 0.37, accuracy 0.98 vs 0.95); on the global test set (all ten
    # classes) a two-class head is worse, as personalisation intends
    (p_loss, p_acc), (m_loss, m_acc) = own_val(personal), own_val(mixed)
    assert p_loss < 0.4 * m_loss and p_acc > m_acc, (own_val(personal), own_val(mixed))
    assert personal.summary["final"]["test_acc"] < mixed.summary["final"]["test_acc"]


def test_convex_problem_bodies_reach_consensus_and_own_heads_fit_their_nodes():
    """The convex model above, two classes per node, L2-regularised, D-SGD on a complete graph
    (W = 11ᵀ/n): after every step the bodies are equal, the heads stay node-specific, and each
    node's model fits its own data far better than the fully mixed model (measured: own
    validation loss 0.04 vs 0.20, accuracy 1.00 vs 0.98)."""
    common = ["data.partition=classes", "data.classes_per_node=2", "data.nodes=6",
              "model.name=test_additive_head", "train.lr=0.1", "train.l2_lambda=0.001",
              "rounds=6", "algorithm.name=dsgd", "topology.name=complete",
              "topology.mixing=uniform"]
    personal = run(small_config(*common, "algorithm.personal_head=true"), write=False)
    mixed = run(small_config(*common), write=False)
    body, head = body_and_head(personal)
    assert spread(body) < 1e-5 and spread(head) > 0.5
    assert spread(body_and_head(mixed)[1]) < 1e-5
    (p_loss, p_acc), (m_loss, m_acc) = own_val(personal), own_val(mixed)
    assert p_loss < 0.5 * m_loss and p_acc > m_acc, (own_val(personal), own_val(mixed))


def test_personal_head_messages_carry_the_body_only():
    common = [*SKEWED, "algorithm.name=dsgd", "rounds=1"]
    full = run(small_config(*common), write=False)
    body = run(small_config(*common, "algorithm.personal_head=true"), write=False)
    layout = body.algorithm.ctx.layout
    shared = layout.total - len(head_columns(body.algorithm.ctx.model, layout))
    assert body.summary["bytes_up"] * layout.total == full.summary["bytes_up"] * shared


def test_personal_head_without_a_body_is_refused_in_one_line():
    with pytest.raises(UserError, match="no body to share"):
        run(small_config("algorithm.name=dsgd", "model.name=logistic",
                         "algorithm.personal_head=true"), write=False)


@pytest.mark.parametrize("algo", ["dsgd", "gossip"])
def test_personal_head_loop_equals_vectorized(algo):
    common = [*SKEWED, f"algorithm.name={algo}", "algorithm.personal_head=true", "rounds=2"]
    a = run(small_config(*common, "engine.name=loop"), write=False).algorithm.models()[0]
    b = run(small_config(*common, "engine.name=vectorized"), write=False).algorithm.models()[0]
    assert torch.allclose(a, b, atol=1e-5)


def test_personal_head_resumes_exactly(tmp_path):
    resumes_exactly(tmp_path, small_config, *SKEWED, "algorithm.name=dsgd",
                    "algorithm.personal_head=true", "train.momentum=0.5", "rounds=4")


def test_personal_head_with_a_robust_neighbour_rule_keeps_the_heads():
    """``aggregator.name=median`` replaces the neighbour average; the heads are still kept."""
    common = [*SKEWED, "algorithm.name=dsgd", "topology.name=complete", "rounds=2",
              "aggregator.name=median"]
    res = run(small_config(*common, "algorithm.personal_head=true"), write=False)
    head = body_and_head(res)[1]
    mixed_head = body_and_head(run(small_config(*common), write=False))[1]
    assert spread(head) > 10 * spread(mixed_head)


@pytest.mark.slow  # two process launches (~30 s)
@pytest.mark.parametrize("algo", ["dsgd", "gossip"])
def test_personal_head_on_two_processes_gives_the_single_process_numbers(tmp_path, algo):
    import os
    import subprocess
    import sys
    args = [f"algorithm.name={algo}", "algorithm.personal_head=true", "rounds=2",
            "data.nodes=6", "model.name=mlp", "model.hidden=[32]", "output.plots=false",
            "output.progress=false", "data.partition=classes", "data.classes_per_node=2",
            "engine.name=vectorized"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for procs in (1, 2):
        cmd = [sys.executable, "-m", "fedweave", "run", *[x for a in args for x in ("--set", a)],
               "--dir", str(tmp_path / f"p{procs}"), "--procs", str(procs)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = (json.loads((tmp_path / f"p{p}" / "summary.json").read_text())["final"]
                for p in (1, 2))
    assert one == two
    a, b = latest_state(tmp_path / "p1"), latest_state(tmp_path / "p2")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_dfedper_is_dsgd_with_a_personal_head() -> None:
    named = run(small_config("algorithm.name=dfedper", "topology.name=ring", *SKEWED[:4],
                             "rounds=2"), write=False)
    keyed = run(small_config("algorithm.name=dsgd", "algorithm.personal_head=true",
                             "topology.name=ring", *SKEWED[:4], "rounds=2"), write=False)
    rows = [{k: v for k, v in r.items() if k != "wall_time"} for r in named.history]
    assert rows == [{k: v for k, v in r.items() if k != "wall_time"} for r in keyed.history]
    with pytest.raises(UserError, match="personal_head"):  # not a key of dfedper
        run(small_config("algorithm.name=dfedper", "algorithm.personal_head=false"),
            write=False)
