"""Byzantine peers and faults in decentralized runs: the robust neighbour rule replaces D-SGD's
mixing (weighted_mean over the neighbourhood is D-SGD itself), an attacker's model messages are
corrupted while robust rules hold, a NaN-sending node does not poison its neighbours, a crashed
node's neighbours keep training on a re-normalised mixing matrix, and the distributed engine
gives the same robust run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from fedweave.callbacks import Callback
from fedweave.config import ClockConfig
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.robust.peers import down_nodes
from fedweave.runner import run
from tests.test_distributed import _assert_same_run, _config, _only_run_dir, _single, _torchrun

RING = ["rounds=6", "data.nodes=8", "data.partition=iid", "model.name=logistic",
        "algorithm.name=dsgd", "topology.name=ring", "output.plots=false",
        "output.progress=false", "engine.name=loop"]


def final(*overrides: str) -> dict[str, Any]:
    return run(load_config(None, [*RING, *overrides]), write=False).summary


def test_weighted_mean_over_the_neighbourhood_is_dsgd() -> None:
    plain = run(load_config(None, RING), write=False)
    rule = run(load_config(None, [*RING, "aggregator.name=weighted_mean"]), write=False)
    a, _, _ = plain.algorithm.models()  # type: ignore[union-attr]
    b, _, _ = rule.algorithm.models()  # type: ignore[union-attr]
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)  # summation order only


def test_sign_flipping_peer_breaks_gossip_averaging_but_not_robust_rules() -> None:
    clean = final()["final"]["test_acc"]
    attack = ["attack.name=sign_flip", "attack.nodes=[0]"]
    mean = final(*attack)
    trimmed = final(*attack, "aggregator.name=trimmed_mean", "aggregator.beta=0.34")
    clipped = final(*attack, "aggregator.name=centered_clip", "aggregator.tau=0.1")
    # measured: clean 0.894; attacked mixing 0.143, trimmed mean 0.868 (honest nodes' mean)
    assert clean - mean["final"]["test_acc"] >= 0.3
    assert clean - trimmed["final"]["test_acc"] <= 0.05
    assert clean - clipped["final"]["test_acc"] <= 0.05
    assert trimmed["attack"] == {"name": "sign_flip", "nodes": [0], "count": 1}


def test_a_nan_sending_node_does_not_poison_its_neighbours() -> None:
    clean = run(load_config(None, RING), write=False)
    res = run(load_config(None, [*RING, "clock.message_corruption=1.0",
                                 "clock.corrupt_nodes=[0]"]), write=False)
    x, _, _ = res.algorithm.models()  # type: ignore[union-attr]
    assert bool(torch.isfinite(x).all())
    steps = res.algorithm.S  # type: ignore[union-attr]
    # node 0 sends to its 2 ring neighbours at every step; every one of them is rejected
    assert [h["messages_rejected"] for h in res.history] == [2.0 * steps] * 6
    assert res.summary["final"]["test_acc"] >= clean.summary["final"]["test_acc"] - 0.03


class Watch(Callback):
    """Each round's node models and which nodes were up."""

    def __init__(self) -> None:
        self.x: list[torch.Tensor] = []
        self.up: list[torch.Tensor] = []
        self.w: list[torch.Tensor] = []

    def on_round(self, runner: Any, r: int, result: Any) -> None:
        self.x.append(runner.algo.x.clone())
        self.up.append(runner.algo.up.clone())
        self.w.append(runner.algo.W.clone())


def test_a_crashed_node_is_frozen_and_its_neighbours_keep_training() -> None:
    clock = ClockConfig(node_crash=0.15, crash_rounds=2)
    downs = [down_nodes(clock, 0, r, 8) for r in range(6)]
    assert any(bool(d.any()) for d in downs) and not all(bool(d.all()) for d in downs)
    watch = Watch()
    over = [*RING, "clock.node_crash=0.15", "clock.crash_rounds=2"]
    res = run(load_config(None, over), write=False, callbacks=[watch])
    for r in range(1, 6):
        up = watch.up[r]
        assert torch.equal(up, ~downs[r])
        moved = (watch.x[r] - watch.x[r - 1]).abs().amax(1) > 0
        assert torch.equal(moved, up), r  # down nodes keep their model, the others train
        w = watch.w[r]
        assert torch.allclose(w.sum(1), torch.ones(8, dtype=w.dtype))  # re-normalised
        assert bool((w[~up][:, up] == 0).all()) and bool((w[up][:, ~up] == 0).all())
    assert [h["nodes_down"] for h in res.history] == [float(d.sum()) for d in downs]
    assert res.summary["final"]["test_acc"] > 0.7


def test_peer_faults_are_refused_where_they_cannot_act() -> None:
    for over, match in (
        (["attack.name=sign_flip", "attack.nodes=[0]", "algorithm.name=pdmm_isvr"],
         "sends no model"),
        (["clock.node_crash=0.1", "clock.asynchronous=true"], "synchronous rounds"),
        (["aggregator.name=krum", "aggregator.f=1"], "at least 4 rows"),
        (["aggregator.name=median", "algorithm.name=gossip"], "does not aggregate"),
    ):
        with pytest.raises(UserError, match=match):
            run(load_config(None, [*RING, *over]), write=False)
    with pytest.raises(UserError, match="node crashes are simulated"):
        load_config(None, ["clock.node_crash=0.1"])


def test_robust_gossip_with_an_attacker_is_identical_on_two_processes(tmp_path: Path) -> None:
    base = {"name": "robust-ring", "seed": 2, "rounds": 2,
            "data": {"dataset": "digits", "nodes": 6, "partition": "iid"},
            "model": {"name": "logistic"}, "train": {"lr": 0.05, "batch_size": 32},
            "algorithm": {"name": "dsgd"}, "topology": {"name": "ring"},
            "aggregator": {"name": "trimmed_mean", "beta": 0.34},
            "attack": {"name": "gaussian", "nodes": [1]},
            "clock": {"message_corruption": 0.2},
            "engine": {"name": "loop", "threads": 1},
            "launcher": {"timeout_s": 30, "exchange": "point_to_point"},
            "output": {"plots": False}}
    single = _single(_config(tmp_path, base, "dsgd", "single"))
    config = _config(tmp_path, base, "dsgd", "dist")
    proc = _torchrun(2, str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_run(single, _only_run_dir(config))
