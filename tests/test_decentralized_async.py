"""Asynchronous peers: gradients computed ahead (the same numbers, fewer engine calls), the
engine's chunk for peers that step one by one, link latency jitter and the warning for nodes
whose links all stay down."""

from __future__ import annotations

import itertools

import pytest
import torch

from fedweave.config import load_config
from fedweave.context import stepping_together
from fedweave.runner import Runner


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def peers(*overrides: str):
    """3 peers on a ring, digits, a small MLP with dropout (dropout is seeded by step key)."""
    base = ["data.dataset=digits", "data.nodes=3", "data.train_samples=300",
            "model.name=mlp", "model.hidden=[16]", "model.dropout=0.2", "train.batch_size=20",
            "algorithm.name=dsgd", "topology.name=ring", "clock.asynchronous=true",
            "output.plots=false", "output.progress=false", "output.checkpoint_every=0"]
    return load_config(None, base + list(overrides))


def two_rounds(cfg, ahead: bool = True):
    algo = Runner(cfg, None).algo
    algo.ahead.enabled = ahead
    losses = [algo.round(r).train_loss for r in range(2)]
    return algo, losses


@pytest.mark.parametrize("backend", ["loop", "vectorized"])
def test_gradients_computed_ahead_give_the_same_numbers_with_fewer_engine_calls(backend):
    # nearly equal speeds: a node's step k comes a little after its neighbours' step k, so
    # their gradients are computed in the same engine call as theirs
    cfg = peers(f"engine.name={backend}", "clock.speeds=[1.0,1.003,0.997]",
                "engine.chunk=3")
    fast, loss_fast = two_rounds(cfg)
    plain, loss_plain = two_rounds(cfg, ahead=False)
    assert torch.equal(fast.x, plain.x)
    assert loss_fast == loss_plain
    assert fast.ahead.served > 0
    assert fast.ahead.calls < plain.ahead.calls


def test_companions_found_in_python_or_on_tensors_are_the_same():
    algo = Runner(peers("data.nodes=6", "clock.speed_sigma=0.2"), None).algo
    gen = torch.Generator().manual_seed(0)
    found = []
    for trial in range(60):
        algo.steps_done = torch.randint(0, 3 * algo.S, (algo.n,), generator=gen)
        stepping = torch.rand(algo.n, generator=gen) < 0.3
        key = divmod(int(algo.steps_done[trial % algo.n]), algo.S)
        algo._look_end = algo._step_time(trial % algo.n, 2 * algo.S)  # some steps fall after
        both = []
        for python_rows in (64, 0):
            algo.python_rows = python_rows
            both.append(algo._companions(key, stepping))
        assert both[0] == both[1]
        found += both[0]
    assert len(found) > 20


def test_peers_that_drift_apart_step_one_row_per_engine_call():
    assert stepping_together(peers("clock.phase=random", "clock.train_fraction=0.5"), 3) == 1
    assert stepping_together(peers("clock.speed_sigma=0.2"), 3) == 1
    assert stepping_together(peers(), 3) == 3  # equal clocks step together
    assert stepping_together(peers("clock.asynchronous=false", "clock.speed_sigma=0.2"), 3) == 3


def arrivals(algo, slot: int = 0, sends: int = 40, gap: float = 0.01) -> list[float]:
    """Arrival times of ``sends`` messages on one slot, sent ``gap`` seconds apart (the
    sender's step counter advancing with each)."""
    out = []
    steps = torch.zeros(algo.n, dtype=torch.int64)
    for k in range(sends):
        steps[:] = k
        out.append(float(algo.transport.arrival(torch.tensor([slot]), steps, k * gap)[0]))
    return out


def test_latency_jitter_is_seeded_and_reorders_arrivals():
    jitter = peers("clock.latency_s=0.05", "clock.latency_jitter=0.1")
    first = arrivals(Runner(jitter, None).algo)
    assert first == arrivals(Runner(jitter, None).algo)  # the same draws every time
    assert any(b < a for a, b in itertools.pairwise(first))  # overtaking
    assert all(0.05 <= t - k * 0.01 <= 0.15 + 1e-9 for k, t in enumerate(first))
    plain = arrivals(Runner(peers("clock.latency_s=0.05"), None).algo)
    assert all(b > a for a, b in itertools.pairwise(plain))  # FIFO without jitter
    other_seed = arrivals(Runner(peers("clock.latency_s=0.05", "clock.latency_jitter=0.1",
                                       "seed=1"), None).algo)
    assert other_seed != first
    # the run itself moves: messages land at other steps
    a, _ = two_rounds(jitter)
    b, _ = two_rounds(peers("clock.latency_s=0.05"))
    assert not torch.equal(a.x, b.x)


def test_latency_jitter_needs_asynchronous_peers():
    from fedweave.errors import UserError
    with pytest.raises(UserError, match="latency_jitter"):
        peers("clock.asynchronous=false", "clock.latency_jitter=0.1")


def test_a_node_whose_links_all_time_out_is_warned_about_once(tmp_path, caplog):
    trace = tmp_path / "trace.csv"
    trace.write_text("node,seconds_per_sample,bandwidth_up,bandwidth_down\n"
                     "0,0.001,1e9,1e9\n1,0.001,1e9,1e9\n2,0.001,1e3,1e3\n3,0.001,1e9,1e9\n")
    cfg = peers("data.nodes=4", f"clock.trace={trace}", "clock.swap_timeout=1.0",
                "model.dropout=0")
    algo = Runner(cfg, None).algo
    with caplog.at_level("WARNING", logger="fedweave"):
        for r in range(3):
            algo.round(r)
    lines = [rec.getMessage() for rec in caplog.records if "trains alone" in rec.getMessage()]
    assert lines == ["node 2 trains alone from round 1: every link timed out "
                     "(clock.swap_timeout=1 s is shorter than its exchanges take)"]
    assert algo.alone == {2}


@pytest.mark.parametrize(("nodes", "chunk"), [(8, 1), (7, 3)])
def test_fused_engine_computes_only_the_chunks_of_stepping_nodes_with_the_same_numbers(
        nodes, chunk):
    cfg = peers(f"data.nodes={nodes}", "model.dropout=0", "engine.name=fused",
                f"engine.chunk={chunk}")
    algo = Runner(cfg, None).algo
    bt = algo.batches(0)
    x = algo.x + 0.1 * torch.randn(algo.x.shape, generator=torch.Generator().manual_seed(0))
    args = (algo.buffers, bt.idx[:, 0], bt.weight[:, 0])
    full = algo.engine.grads(x, *args, torch.ones(nodes, dtype=torch.bool), (0, 0), algo.nodes)
    for rows in ([0], [nodes - 1], [1, 2]):
        act = torch.zeros(nodes, dtype=torch.bool)
        act[rows] = True
        part = algo.engine.grads(x, *args, act, (0, 0), algo.nodes)
        assert torch.equal(part.grads[act], full.grads[act])
        assert bool((part.grads[~act] == 0).all())
        assert torch.equal(part.loss[act], full.loss[act])
        assert torch.equal(part.correct[act], full.correct[act])
