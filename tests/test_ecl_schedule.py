"""Reference system 001's exchange schedule (nttcslab/ecl-isvr): per-directed-edge offsets read
from its node list, two-way exchanges started by either end, D-SGD's stale-copy update, the
end-of-epoch model swap, desynchronised train/idle periods on the virtual clock, epochs of a
fixed sample count and the shuffled, shifted class windows of its data split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fedweave.config import DataConfig, TopologyConfig
from fedweave.data.partition import partition
from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.rng import numpy_rng
from fedweave.runner import Runner, run
from fedweave.topology import directed_offsets, edge_list, load_seed_offsets
from fedweave.training.batches import batch_schedule, local_steps

ROOT = Path(__file__).resolve().parents[1]
RANDOM8 = ROOT / "configs" / "topologies" / "node_list.n8.random.round8.json"
DOUBLE_RING8 = ROOT / "configs" / "topologies" / "node_list.n8.doublering.round8.json"
#: (i, j): (offset i→j, offset j→i) of reference system 001's random graph (research notes)
RANDOM8_OFFSETS = {(0, 1): (0, 5), (0, 4): (2, 6), (0, 6): (4, 6), (0, 7): (7, 5),
                   (1, 6): (2, 4), (2, 4): (2, 4), (2, 5): (6, 7), (3, 6): (3, 0),
                   (3, 7): (7, 1), (4, 5): (0, 4)}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def digits(*overrides: str):
    base = ["data.dataset=digits", "data.nodes=4", "data.partition=iid", "model.name=logistic",
            "rounds=3", "train.lr=0.1", "train.batch_size=32", "output.plots=false",
            "output.progress=false", "engine.name=loop", "topology.name=ring"]
    return load_config(None, base + list(overrides))


def line3(tmp_path: Path) -> Path:
    """0 — 1 — 2, K = 4: node 0 starts 0→1 at t ≡ 1, node 1 starts 1→0 at t ≡ 3 and 1→2 at
    t ≡ 2; node 2 lists 1 without an offset (it never starts that exchange)."""
    nodes = {"node0": {"round": 4, "edges": {"node1": 1}},
             "node1": {"round": 4, "edges": {"node0": 3, "node2": 2}},
             "node2": {"round": 4, "edges": {"node1": None}}}
    path = tmp_path / "node_list.json"
    path.write_text(json.dumps({"nodes": nodes}))
    return path


LINE = ["data.nodes=3", "topology.name=edges", "algorithm.exchange_period=4",
        "algorithm.offsets=file", "train.local_steps=1", "data.partition=iid"]


# ---------------------------------------------------------------------------- offsets


def test_directed_offsets_are_read_from_the_reference_node_list():
    k, offsets = load_seed_offsets(RANDOM8)
    assert k == 8 and len(offsets) == 20
    for (i, j), (a, b) in RANDOM8_OFFSETS.items():
        assert (offsets[(i, j)], offsets[(j, i)]) == (a, b)
    cfg = TopologyConfig(name="edges", file=RANDOM8)
    edges = torch.tensor(sorted(RANDOM8_OFFSETS))
    slot = directed_offsets(cfg, edges, 8)
    e = len(edges)
    assert slot[:e].tolist() == [a for a, _ in RANDOM8_OFFSETS.values()]
    assert slot[e:].tolist() == [b for _, b in RANDOM8_OFFSETS.values()]
    k, ring = load_seed_offsets(DOUBLE_RING8)
    assert k == 8 and len(ring) == 32 and (ring[(0, 7)], ring[(7, 0)]) == (0, 0)


def test_the_run_uses_the_files_graph_and_offsets():
    cfg = digits("data.nodes=8", "topology.name=edges", f"topology.file={RANDOM8}",
                 "algorithm.name=dsgd", "algorithm.exchange_period=8", "algorithm.offsets=file",
                 "topology.mixing=uniform")
    algo = Runner(cfg, None).algo
    assert [tuple(e) for e in edge_list(algo.graph).tolist()] == sorted(RANDOM8_OFFSETS)
    assert [d for _, d in sorted(algo.graph.degree)] == [4, 2, 2, 2, 3, 2, 3, 2]
    for s in range(len(algo.slot_own)):
        i, j = int(algo.slot_own[s]), int(algo.slot_nbr[s])
        pair = RANDOM8_OFFSETS[(min(i, j), max(i, j))]
        assert int(algo.offset[s]) == pair[0 if i < j else 1]


@pytest.mark.parametrize(("over", "match"), [
    (["topology.name=ring"], "topology.file"),
    ([f"topology.file={RANDOM8}", "algorithm.exchange_period=4"], "exchange_period=8"),
])
def test_file_offsets_need_a_node_list_with_the_same_round(over, match):
    cfg = digits("data.nodes=8", "topology.name=edges", "algorithm.name=dsgd",
                 "algorithm.offsets=file", "algorithm.exchange_period=8", *over)
    with pytest.raises(UserError, match=match):
        Runner(cfg, None)


# ---------------------------------------------------------------------------- two-way exchanges


def _copies_per_step(cfg, steps: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(models after step t, copies after step t) for t < steps (one step per round)."""
    algo = Runner(cfg, None).algo
    out = []
    for r in range(steps):
        algo.round(r)
        out.append((algo.x.clone(), algo.copies["x"].clone()))
    return out


def test_two_way_exchange_refreshes_both_copies_at_each_ends_own_offset(tmp_path):
    node_list = line3(tmp_path)
    cfg = digits(*LINE, f"topology.file={node_list}", "algorithm.name=dsgd",
                 "algorithm.exchange=two_way")
    # slots: 0 = 0→1, 1 = 1→2, 2 = 1→0, 3 = 2→1; copies[s] = what nbr[s] last sent own[s]
    history = _copies_per_step(cfg, 8)
    init = Runner(cfg, None).ctx.init_params
    for t, (x, copies) in enumerate(history):
        before = history[t - 1][1] if t else init.expand(4, -1)
        edge01 = t % 4 in (1, 3)  # node 0 starts at 1, node 1 starts at 3
        edge12 = t % 4 == 2       # only node 1 starts
        for slot, sender, fresh in ((0, 1, edge01), (2, 0, edge01), (1, 2, edge12),
                                    (3, 1, edge12)):
            expected = x[sender] if fresh else before[slot]
            torch.testing.assert_close(copies[slot], expected, rtol=0, atol=0)
    one_way = _copies_per_step(digits(*LINE, f"topology.file={node_list}",
                                      "algorithm.name=dsgd"), 4)
    # one way, node 0's offset 1 refreshes node 1's copy of node 0 only
    assert torch.equal(one_way[1][1][0], one_way[0][1][0])
    assert not torch.equal(one_way[1][1][2], one_way[0][1][2])


def test_two_way_dsgd_step_is_the_reference_update(tmp_path):
    """x_i ← (x_i − lr·g_i + Σ_j x̃_j)/(deg_i + 1), x̃_j the copies held before the step."""
    cfg = digits(*LINE, f"topology.file={line3(tmp_path)}", "algorithm.name=dsgd",
                 "algorithm.exchange=two_way", "topology.mixing=uniform", "train.l2_lambda=0.01")
    algo = Runner(cfg, None).algo
    seen = []
    algo.observers.append(lambda a, info: seen.append(info.x_local.clone()))
    deg = torch.tensor([1.0, 2.0, 1.0]).view(-1, 1)
    for r in range(6):
        copies = algo.copies["x"].clone()
        algo.round(r)
        neighbours = torch.zeros_like(algo.x).index_add_(0, algo.own, copies)
        torch.testing.assert_close(algo.x, (seen[-1] + neighbours) / (deg + 1))


def test_two_way_isvr_swaps_the_duals_published_at_the_step(tmp_path):
    """y_{i|j} = z_{i|j} − 2A_{i|j}x_i is published after i's update; a swap on edge {0, 1}
    sets each end's z to the other end's published y."""
    cfg = digits(*LINE, f"topology.file={line3(tmp_path)}", "algorithm.name=pdmm_isvr",
                 "algorithm.exchange=two_way")
    algo = Runner(cfg, None).algo
    assert torch.equal(algo.outbox["y"], torch.zeros_like(algo.outbox["y"]))  # duals start at 0
    for r in range(8):
        z = algo.z.clone()
        algo.round(r)
        y = algo.outbox["y"]
        torch.testing.assert_close(y, z - 2 * algo.sign * algo.x[algo.own], rtol=0, atol=0)
        swapped01, swapped12 = r % 4 in (1, 3), r % 4 == 2
        for slot, other, swapped in ((0, 2, swapped01), (2, 0, swapped01), (1, 3, swapped12),
                                     (3, 1, swapped12)):
            torch.testing.assert_close(algo.z[slot], y[other] if swapped else z[slot],
                                       rtol=0, atol=0)


@pytest.mark.parametrize("name", ["dsgd", "pdmm_isvr"])
def test_asynchronous_two_way_run_without_idle_time_is_the_synchronous_run(name, tmp_path):
    over = ["data.nodes=8", "topology.name=edges", f"topology.file={RANDOM8}",
            "algorithm.exchange_period=8", "algorithm.offsets=file", "algorithm.exchange=two_way",
            "topology.mixing=uniform", f"algorithm.name={name}", "train.lr=0.02"]
    if name == "dsgd":
        over.append("algorithm.epoch_swap=true")
    sync = run(digits(*over), write=False)
    asyn = run(digits(*over, "clock.asynchronous=true"), write=False)
    assert sync.summary["final"]["test_acc"] == asyn.summary["final"]["test_acc"]
    torch.testing.assert_close(sync.algorithm.x, asyn.algorithm.x, rtol=0, atol=0)


def test_epoch_swap_refreshes_every_copy_at_the_end_of_the_epoch():
    cfg = digits("algorithm.name=dsgd", "algorithm.exchange_period=50",
                 "algorithm.exchange=two_way", "rounds=1")
    swapped = Runner(cfg.model_copy(update={"algorithm": cfg.algorithm.model_copy(
        update={"epoch_swap": True})}), None).algo
    plain = Runner(cfg, None).algo
    for algo in (swapped, plain):
        algo.round(0)
    # K = 50 > S: some edges never exchange within the epoch; the swap refreshes them all
    fresh = swapped.x[swapped.nbr]
    torch.testing.assert_close(swapped.copies["x"], fresh, rtol=0, atol=0)
    assert not torch.equal(plain.copies["x"], plain.x[plain.nbr])


# ---------------------------------------------------------------------------- train/idle clock


IDLE = ["algorithm.name=dsgd", "algorithm.exchange_period=3", "algorithm.exchange=two_way",
        "algorithm.epoch_swap=true", "clock.asynchronous=true", "clock.train_fraction=0.4",
        "clock.phase=random", "clock.speeds=[1,1.5,0.7,1]", "clock.latency_s=0.001"]


def test_step_times_follow_the_train_idle_formula():
    cfg = digits(*IDLE, "rounds=3")
    runner = Runner(cfg, None)
    algo = runner.algo
    times: dict[int, list[float]] = {i: [] for i in range(4)}
    swaps: list[tuple[float, list[int]]] = []
    step, swap = algo._step, algo._swap_epoch

    def record_step(groups, now, stats):
        for mask, _, _ in groups:
            for i in torch.nonzero(mask).flatten().tolist():
                times[i].append(now)
        return step(groups, now, stats)

    def record_swap(ended, now):
        swaps.append((now, torch.nonzero(ended).flatten().tolist()))
        swap(ended, now)

    algo._step, algo._swap_epoch = record_step, record_swap
    for r in range(3):
        algo.round(r)
    s = algo.S
    tau = cfg.clock.seconds_per_sample * algo.b.double() / torch.tensor(cfg.clock.speeds,
                                                                      dtype=torch.float64)
    period = s * tau / 0.4
    phase = torch.from_numpy(numpy_rng(cfg.seed, "clock-phase").uniform(0, 1, 4)) * period
    end = 3 * float(period.max())
    for i in range(4):
        expected = [float(phase[i] + (k // s) * period[i] + (k % s + 1) * tau[i])
                    for k in range(len(times[i]))]
        assert times[i] == pytest.approx(expected, rel=1e-12)
        assert expected[-1] <= end and float(phase[i] + (len(times[i]) // s) * period[i] +
                                             (len(times[i]) % s + 1) * tau[i]) > end
        ends = [t for t, nodes in swaps if i in nodes]
        assert ends == pytest.approx([float(phase[i] + (e + 1) * period[i])
                                      for e in range(len(ends))], rel=1e-12)
        assert len(ends) >= 2
    assert algo.clock.now == pytest.approx(end)


def test_killed_mid_epoch_idle_run_resumes_exactly(tmp_path):
    class Killed(Exception):
        pass

    over = [f"output.dir={tmp_path}", "rounds=4", *IDLE]
    full = run(digits(*over, "name=full"))

    def kill(r, total, row):
        if r == 2:
            raise Killed

    with pytest.raises(Killed):
        run(digits(*over, "name=killed"), progress=kill)
    resumed = run(resume=next(tmp_path.glob("killed-*")))
    assert resumed.summary["final"] == full.summary["final"]
    torch.testing.assert_close(resumed.algorithm.x, full.algorithm.x, rtol=0, atol=0)
    torch.testing.assert_close(resumed.algorithm.outbox["x"], full.algorithm.outbox["x"],
                               rtol=0, atol=0)


def test_idle_time_changes_what_neighbours_see():
    busy = run(digits(*IDLE[:-3], "clock.phase=random"), write=False)
    idle = run(digits(*IDLE), write=False)
    assert idle.summary["sim_time_s"] > busy.summary["sim_time_s"]
    assert not torch.equal(idle.algorithm.x, busy.algorithm.x)


@pytest.mark.parametrize("over", [["clock.train_fraction=0.5"], ["clock.phase=random"]])
def test_idle_periods_need_asynchronous_peers(over):
    with pytest.raises(UserError, match="asynchronous"):
        digits("algorithm.name=dsgd", *over)
    with pytest.raises(UserError, match="asynchronous"):
        digits("algorithm.name=fedavg", *over)


# ---------------------------------------------------------------------------- epochs and data


def test_epoch_samples_fix_the_epoch_whatever_the_shard_size():
    cfg = digits("train.epoch_samples=250", "train.batch_size=32", "data.nodes=5",
                 "data.partition=quantity")
    sizes = torch.tensor([20, 100, 400])
    assert local_steps(cfg.train, sizes).tolist() == [13, 8, 8]  # ⌈250/min(32, n)⌉
    data = Runner(cfg, None).ctx.data
    nodes = torch.arange(5)
    steps = local_steps(cfg.train, data.sizes)
    bt = batch_schedule(data, nodes, steps, 32, (0,), shuffle=True)
    plain = batch_schedule(data, nodes, steps, 32, (0,))
    for k in range(5):
        n, b = len(data.train_idx[k]), min(32, len(data.train_idx[k]))
        drawn = bt.idx[k, : int(steps[k]), :b].reshape(-1)
        counts = torch.bincount(drawn, minlength=len(data.y))[data.train_idx[k]]
        m = int(steps[k]) * b
        assert set(counts.tolist()) <= {m // n, -(-m // n)} and int(counts.sum()) == m
        # the same samples as the plain stream, in another order
        same = plain.idx[k, : int(steps[k]), :b].reshape(-1)
        assert torch.equal(drawn.sort().values, same.sort().values)
        assert not torch.equal(drawn, same)
    default = digits()
    assert default.train.epoch_samples is None
    assert torch.equal(local_steps(default.train, sizes), torch.tensor([1, 4, 13]))


def test_decentralized_epoch_is_epoch_samples_steps():
    cfg = digits("algorithm.name=dsgd", "train.epoch_samples=320")
    assert Runner(cfg, None).algo.S == 10


REFERENCE_ORDER = [7, 8, 2, 6, 4, 5, 1, 3, 0, 9]


def test_the_reference_class_order_is_its_seed_11_shuffle():
    order = list(range(10))
    np.random.RandomState(11).shuffle(order)
    assert order == REFERENCE_ORDER


def test_shifted_windows_over_the_class_order_give_the_reference_class_sets():
    y = torch.arange(10).repeat_interleave(600)
    cfg = DataConfig(nodes=8, partition="classes", classes_per_node=8,
                     class_order=REFERENCE_ORDER, class_shift=4)
    shards = partition(y, cfg, seed=0)
    sets = [set(y[s].unique().tolist()) for s in shards]
    assert sets[0] == {7, 8, 2, 6, 4, 5, 1, 3} and sets[1] == {4, 5, 1, 3, 0, 9, 7, 8}
    assert sets[2] == {0, 9, 7, 8, 2, 6, 4, 5} and sets[3] == {2, 6, 4, 5, 1, 3, 0, 9}
    assert sets[4] == {1, 3, 0, 9, 7, 8, 2, 6}
    assert sets[5:] == sets[:3]  # 4·5 ≡ 0 (mod 10)
    every = torch.cat(shards).sort().values
    assert torch.equal(every, torch.arange(len(y)))  # a disjoint cover of the data
    # shares U(0.8, 1): every holder of a class gets between 0.8/(0.8 + 1·(h−1)) and
    # 1/(1 + 0.8·(h−1)) of it (h holders)
    for c in range(10):
        counts = [int((y[s] == c).sum()) for s in shards if int((y[s] == c).sum())]
        h = len(counts)
        assert min(counts) >= int(600 * 0.8 / (0.8 + h - 1)) - 1
        assert max(counts) <= 600 / (1 + 0.8 * (h - 1)) + 1


def test_class_order_shuffled_is_seeded_and_a_list_must_name_every_class():
    y = torch.arange(10).repeat_interleave(50)
    cfg = DataConfig(nodes=5, partition="classes", classes_per_node=2, class_order="shuffled",
                     class_shift=2)
    a, b = partition(y, cfg, seed=3), partition(y, cfg, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    natural = partition(y, cfg.model_copy(update={"class_order": "natural"}), seed=3)
    classes = [set(y[s].unique().tolist()) for s in a]
    assert sorted(c for s in classes for c in s) == list(range(10))  # still a cover
    assert classes != [set(y[s].unique().tolist()) for s in natural]
    with pytest.raises(UserError, match="every class"):
        partition(y, cfg.model_copy(update={"class_order": [0, 1, 2]}), seed=3)
