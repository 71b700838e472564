import json
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from fedweave.config import TopologyConfig
from fedweave.errors import UserError
from fedweave.topology import (
    TOPOLOGIES,
    build_graph,
    edge_list,
    exchange_schedule,
    load_seed_node_list,
    mixing_matrix,
    plot_graph,
    register_topology,
    spectral_gap,
)

GENERATED = [
    "ring", "double_ring", "complete", "star", "exponential", "random_regular",
    "erdos_renyi", "line",
]  # fmt: skip
SIZES = [4, 8, 9, 16]
MIXINGS = ["metropolis", "uniform", "max_degree"]


def config(name, n):
    """Default keys, with a random-regular degree that exists for n."""
    return TopologyConfig(name=name, degree=3 if n % 2 == 0 else 4)


def graphs():
    for name in [*GENERATED, "torus"]:
        for n in SIZES:
            yield name, n, build_graph(config(name, n), n, seed=0)


def degrees(g):
    return sorted({d for _, d in g.degree})


@pytest.mark.parametrize("name", [*GENERATED, "torus"])
@pytest.mark.parametrize("n", SIZES)
def test_connected_with_expected_nodes(name, n):
    g = build_graph(config(name, n), n, seed=0)
    assert sorted(g.nodes) == list(range(n))
    assert nx.is_connected(g)
    assert nx.number_of_selfloops(g) == 0


@pytest.mark.parametrize("n", [5, 8, 16])
def test_degrees(n):
    def deg(name, **kw):
        return degrees(build_graph(TopologyConfig(name=name, **kw), n, seed=0))

    assert deg("ring") == [2]
    assert deg("double_ring") == [4]
    assert deg("complete") == [n - 1]
    assert deg("star") == [1, n - 1]
    assert deg("line") == [1, 2]
    assert deg("random_regular", degree=4) == [4]
    hops = {h % n for k in range(n.bit_length()) if 2**k < n for h in (2**k, -(2**k))}
    assert deg("exponential") == [len(hops)]


def test_torus_and_structure():
    for n in (9, 16):
        assert degrees(build_graph(TopologyConfig(name="torus"), n, seed=0)) == [4]
    g = build_graph(TopologyConfig(name="double_ring"), 8, seed=0)
    assert set(g[0]) == {1, 2, 6, 7}
    g = build_graph(TopologyConfig(name="exponential"), 8, seed=0)
    assert set(g[0]) == {1, 2, 4, 6, 7}
    assert set(build_graph(TopologyConfig(name="star"), 6, seed=0)[0]) == {1, 2, 3, 4, 5}


@pytest.mark.parametrize("name", [*GENERATED, "torus", "edges"])
def test_single_node(name):
    g = build_graph(TopologyConfig(name=name, edges=[]), 1, seed=0)
    assert list(g.nodes) == [0] and g.number_of_edges() == 0
    for kind in MIXINGS:
        assert torch.equal(mixing_matrix(g, kind), torch.ones(1, 1, dtype=torch.float64))
    assert spectral_gap(mixing_matrix(g, "metropolis")) == 1.0
    assert edge_list(g).shape == (0, 2)
    assert exchange_schedule(edge_list(g), 1, 4).shape == (0,)


def test_mixing_properties_on_every_topology():
    for name, n, g in graphs():
        for kind in MIXINGS:
            w = mixing_matrix(g, kind)
            assert w.dtype == torch.float64 and w.shape == (n, n)
            assert (w >= -1e-15).all(), (name, n, kind)
            assert torch.allclose(w.sum(1), torch.ones(n, dtype=torch.float64))
            adjacency = torch.tensor(nx.to_numpy_array(g, nodelist=range(n))) > 0
            off_diagonal = ~torch.eye(n, dtype=torch.bool)
            assert torch.equal((w > 0) & off_diagonal, adjacency)
            if kind != "uniform":
                assert torch.allclose(w, w.T)
                assert torch.allclose(w.sum(0), torch.ones(n, dtype=torch.float64))
            gap = spectral_gap(w)
            assert 0 < gap <= 1 + 1e-12, (name, n, kind, gap)


def test_metropolis_values():
    g = build_graph(TopologyConfig(name="star"), 4, seed=0)
    w = mixing_matrix(g, "metropolis")
    assert w[0, 1] == pytest.approx(1 / 4)
    assert w[1, 1] == pytest.approx(3 / 4)
    assert w[0, 0] == pytest.approx(1 / 4)
    w = mixing_matrix(g, "max_degree")
    assert w[1, 2] == 0 and w[1, 1] == pytest.approx(3 / 4)


def test_uniform_not_column_stochastic_on_star():
    g = build_graph(TopologyConfig(name="star"), 5, seed=0)
    w = mixing_matrix(g, "uniform")
    assert torch.allclose(w.sum(1), torch.ones(5, dtype=torch.float64))
    assert not torch.allclose(w.sum(0), torch.ones(5, dtype=torch.float64))
    assert w[1, 0] == pytest.approx(0.5) and w[0, 1] == pytest.approx(0.2)


def test_complete_graph_gap_is_one():
    g = build_graph(TopologyConfig(name="complete"), 6, seed=0)
    for kind in ("metropolis", "uniform"):
        assert spectral_gap(mixing_matrix(g, kind)) == pytest.approx(1.0)
    ring = spectral_gap(mixing_matrix(build_graph(TopologyConfig(), 16, seed=0), "metropolis"))
    assert 0 < ring < 0.2


def test_repeated_mixing_reaches_the_mean():
    x = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name in ("ring", "torus", "exponential", "erdos_renyi"):
        g = build_graph(TopologyConfig(name=name), 16, seed=0)
        for kind in ("metropolis", "max_degree"):
            w = mixing_matrix(g, kind)
            y = torch.linalg.matrix_power(w, 2000) @ x
            assert torch.allclose(y, x.mean(0).expand_as(y), atol=1e-8), (name, kind)


def test_edge_list_sorted():
    g = nx.Graph([(3, 1), (0, 2), (2, 1), (0, 3)])
    e = edge_list(g)
    assert e.dtype == torch.int64
    assert e.tolist() == [[0, 2], [0, 3], [1, 2], [1, 3]]


def _check_schedule(g, period):
    edges = edge_list(g)
    offsets = exchange_schedule(edges, g.number_of_nodes(), period)
    assert offsets.dtype == torch.int64 and offsets.shape == (len(edges),)
    assert ((offsets >= 0) & (offsets < period)).all()
    return edges, offsets


def _clashes(edges, offsets):
    seen = set()
    clashes = 0
    for (i, j), o in zip(edges.tolist(), offsets.tolist(), strict=True):
        clashes += ((i, o) in seen) + ((j, o) in seen)
        seen |= {(i, o), (j, o)}
    return clashes


def test_exchange_schedule_proper_with_enough_offsets():
    cases = list(graphs())
    for s in range(20):
        cfg = TopologyConfig(name="random_regular", degree=5)
        cases.append(("rr", 12, build_graph(cfg, 12, seed=s)))
        cfg = TopologyConfig(name="erdos_renyi", p=0.4)
        cases.append(("er", 15, build_graph(cfg, 15, seed=s)))
    for name, n, g in cases:
        max_degree = max(d for _, d in g.degree)
        for period in (max_degree + 1, max_degree + 3):
            edges, offsets = _check_schedule(g, period)
            assert _clashes(edges, offsets) == 0, (name, n, period)


def test_exchange_schedule_spreads_and_short_periods():
    g = build_graph(TopologyConfig(name="ring"), 12, seed=0)
    _, offsets = _check_schedule(g, 6)
    assert torch.bincount(offsets, minlength=6).tolist() == [2] * 6
    _, offsets = _check_schedule(g, 1)
    assert offsets.tolist() == [0] * 12
    g = build_graph(TopologyConfig(name="complete"), 6, seed=0)
    _, offsets = _check_schedule(g, 3)
    counts = torch.bincount(offsets, minlength=3)
    assert counts.max() - counts.min() <= 1


def test_same_seed_same_random_graph():
    for name in ("random_regular", "erdos_renyi"):
        cfg = TopologyConfig(name=name)
        a, b = build_graph(cfg, 16, seed=3), build_graph(cfg, 16, seed=3)
        assert sorted(a.edges) == sorted(b.edges)
        c = build_graph(cfg, 16, seed=4)
        assert sorted(a.edges) != sorted(c.edges)


def test_explicit_edges_and_files(tmp_path: Path):
    g = build_graph(TopologyConfig(name="edges", edges=[(0, 1), (1, 2), (2, 3)]), 4, seed=0)
    assert sorted(g.edges) == [(0, 1), (1, 2), (2, 3)]
    text = tmp_path / "edges.txt"
    text.write_text("# a ring\n0 1\n1 2\n\n2 0  # closing edge\n")
    g = build_graph(TopologyConfig(name="edges", file=text), 3, seed=0)
    assert sorted(edge_list(g).tolist()) == [[0, 1], [0, 2], [1, 2]]
    js = tmp_path / "edges.json"
    js.write_text("[[0, 1], [1, 2]]")
    assert build_graph(TopologyConfig(name="edges", file=js), 3, seed=0).number_of_edges() == 2


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_seed_ecl_isvr_files(tmp_path: Path):
    nodes = {
        f"node{i}": {
            "device": "cuda",
            "round": 8,
            "edges": {f"node{(i + h) % 8}": (i + h) % 8 for h in (-2, -1, 1, 2)},
        }
        for i in range(8)
    }
    node_list = _write(tmp_path / "node_list.json", {"nodes": nodes})
    hosts = _write(
        tmp_path / "hosts.json",
        {"hosts": [{"name": f"node{i}", "addr": "localhost", "port": str(10000 + i)}
                   for i in range(8)]},
    )  # fmt: skip
    edges, addrs = load_seed_node_list(node_list, hosts)
    assert len(edges) == 16 and all(i < j for i, j in edges)
    assert addrs is not None and addrs[3] == "localhost:10003"
    assert load_seed_node_list(node_list, None)[1] is None
    cfg = TopologyConfig(name="edges", file=node_list, hosts=hosts)
    g = build_graph(cfg, 8, seed=0)
    assert sorted(g.edges) == sorted(build_graph(TopologyConfig(name="double_ring"), 8, 0).edges)


def test_seed_edge_consensus_list_format(tmp_path: Path):
    names = ["CASPER", "BALTHASAR", "MELCHIOR"]
    nodes = [
        {"name": a, "addr": "localhost", "port": str(9997 + k), "edges": list(set(names) - {a})}
        for k, a in enumerate(names)
    ]
    edges, addrs = load_seed_node_list(_write(tmp_path / "n.json", {"nodes": nodes}))
    assert edges == [(0, 1), (0, 2), (1, 2)]
    assert addrs == ["localhost:9997", "localhost:9998", "localhost:9999"]
    # hosts as a mapping reorder the nodes
    hosts = _write(tmp_path / "h.json", {n: {"addr": n, "port": 1} for n in reversed(names)})
    assert load_seed_node_list(tmp_path / "n.json", hosts)[1] == [f"{n}:1" for n in
                                                                  reversed(names)]


@pytest.mark.parametrize(
    ("cfg", "n", "match"),
    [
        (TopologyConfig(name="edges", edges=[(0, 1), (2, 3)]), 4, "disconnected"),
        (TopologyConfig(name="edges", edges=[(0, 1), (1, 4)]), 4, "outside"),
        (TopologyConfig(name="edges", edges=[(0, 0), (0, 1)]), 2, "self-loop"),
        (TopologyConfig(name="edges"), 4, r"topology\.edges or topology\.file"),
        (TopologyConfig(name="edges", file=Path("/nonexistent/e.txt")), 4, "not found"),
        (TopologyConfig(name="random_regular", degree=3), 5, "even"),
        (TopologyConfig(name="random_regular", degree=5), 5, "below"),
        (TopologyConfig(name="torus"), 7, "non-prime"),
    ],
)
def test_user_errors(cfg, n, match):
    with pytest.raises(UserError, match=match):
        build_graph(cfg, n, seed=0)


def test_bad_files_and_mixing(tmp_path: Path):
    bad = tmp_path / "bad.txt"
    bad.write_text("0 x\n")
    with pytest.raises(UserError, match=r"topology\.file"):
        build_graph(TopologyConfig(name="edges", file=bad), 2, seed=0)
    node_list = _write(tmp_path / "n.json", {"nodes": {"a": {"edges": ["zz"]}}})
    with pytest.raises(UserError, match="unknown neighbour"):
        load_seed_node_list(node_list)
    hosts = _write(tmp_path / "h.json", {"hosts": [{"name": "b", "addr": "x", "port": 1}]})
    with pytest.raises(UserError, match="no host"):
        load_seed_node_list(_write(tmp_path / "m.json", {"nodes": {"a": {"edges": []}}}), hosts)
    with pytest.raises(UserError, match=r"topology\.mixing"):
        mixing_matrix(nx.path_graph(2), "bogus")


def test_a_run_refuses_a_hosts_file_with_conflicting_ports(tmp_path: Path):
    node_list = _write(tmp_path / "n.json", {"nodes": {"a": {"edges": ["b"]}, "b": {}}})
    hosts = _write(tmp_path / "h.json", {"hosts": [{"name": "a", "addr": "x", "port": "7"},
                                                   {"name": "b", "addr": "x", "port": 7}]})
    cfg = TopologyConfig(name="edges", file=node_list, hosts=hosts)
    with pytest.raises(UserError, match="hosts a and b both use x:7"):
        build_graph(cfg, 2, seed=0)


def test_register_topology():
    @register_topology("test_wheel")
    def wheel(cfg, n, rng: np.random.Generator):
        return nx.wheel_graph(n)

    assert "test_wheel" in TOPOLOGIES
    cfg = TopologyConfig.model_construct(name="test_wheel")
    assert build_graph(cfg, 6, seed=0).number_of_edges() == 10


def test_plot_graph(tmp_path: Path):
    for name in ("ring", "erdos_renyi"):
        g = build_graph(TopologyConfig(name=name), 8, seed=0)
        path = tmp_path / f"{name}.png"
        plot_graph(g, mixing_matrix(g, "metropolis"), path)
        assert path.stat().st_size > 1000
    plot_graph(build_graph(TopologyConfig(), 1, seed=0), None, tmp_path / "one.png")
