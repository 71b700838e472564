"""Communication graphs, mixing matrices and exchange schedules for decentralized learning.

Graphs are undirected ``networkx.Graph`` objects on nodes ``0..n-1``. Builders
live in the ``TOPOLOGIES`` registry; add one with ``@register_topology("name")`` and the
signature ``(cfg, n, rng) -> nx.Graph``. Randomness comes only from
``fedweave.rng.numpy_rng(seed, "topology")``, so the same seed gives the same graph.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import torch

from fedweave.config import TopologyConfig, read_text
from fedweave.errors import UserError
from fedweave.registry import Registry
from fedweave.rng import numpy_rng

Builder = Callable[[TopologyConfig, int, np.random.Generator], nx.Graph]
TOPOLOGIES: Registry[Builder] = Registry("topology")
MAX_RESAMPLES = 100
_CIRCULAR = {"ring", "double_ring", "exponential", "complete", "line"}


def register_topology(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``topology.name: <name>`` build a graph with this function."""
    return TOPOLOGIES.register(name)


def build_graph(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    """The graph ``cfg.name`` on ``n`` nodes; connected, undirected, without self-loops.

    ``n == 1`` gives a single node without edges for every topology (decentralized learning on
    one node is centralized learning).
    """
    if n == 1:
        graph = nx.empty_graph(1)
    else:
        graph = TOPOLOGIES.get(cfg.name)(cfg, n, numpy_rng(seed, "topology"))
        if sorted(graph.nodes) != list(range(n)):
            raise UserError(f"topology.name={cfg.name}: the graph must have nodes 0..{n - 1}")
        if not nx.is_connected(graph):
            raise UserError(f"topology.name={cfg.name}: the graph is not connected; add edges")
    graph.graph["topology"] = cfg.name
    return graph


def _ring_graph(n: int, hops: tuple[int, ...]) -> nx.Graph:
    graph = nx.empty_graph(n)
    graph.add_edges_from((i, (i + h) % n) for i in range(n) for h in hops if (i + h) % n != i)
    return graph


@register_topology("ring")
def _ring(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    return _ring_graph(n, (1,))


@register_topology("double_ring")
def _double_ring(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    """The "multiplex ring" of ECL-ISVR (Niwa et al. 2021): i ~ i±1 and i ~ i±2."""
    return _ring_graph(n, (1, 2))


@register_topology("line")
def _line(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    return nx.path_graph(n)


@register_topology("complete")
def _complete(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    return nx.complete_graph(n)


@register_topology("star")
def _star(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    """Node 0 is the hub."""
    return nx.star_graph(n - 1)


@register_topology("exponential")
def _exponential(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    """i ~ i ± 2^k (mod n) for every 2^k < n (Assran et al. 2019, SGP)."""
    hops = tuple(2**k for k in range(n.bit_length()) if 2**k < n)
    return _ring_graph(n, hops)


@register_topology("torus")
def _torus(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    """A 2-D r×c grid with wraparound, r the largest divisor of n with r ≤ √n; node = a·c + b.

    Degree 4 when r, c ≥ 3. A prime n > 3 has no such grid and is an error.
    """
    rows = max(r for r in range(1, int(n**0.5) + 1) if n % r == 0)
    cols = n // rows
    if rows == 1 and n > 3:
        raise UserError(
            f"topology.name=torus needs a non-prime number of nodes (data.nodes={n}); "
            "use e.g. 9 or 16 nodes, or topology.name=ring"
        )
    grid = nx.grid_2d_graph(rows, cols, periodic=rows > 2 or cols > 2)
    return nx.relabel_nodes(nx.Graph(grid), {(a, b): a * cols + b for a, b in grid.nodes})


def _check_degree(cfg: TopologyConfig, n: int) -> None:
    if cfg.degree >= n:
        raise UserError(f"topology.degree={cfg.degree} must be below data.nodes={n}")
    if n * cfg.degree % 2:
        raise UserError(
            f"topology.degree={cfg.degree} times data.nodes={n} must be even; change either"
        )


def _resample(make: Callable[[int], nx.Graph], rng: np.random.Generator, what: str) -> nx.Graph:
    for _ in range(MAX_RESAMPLES):
        graph = make(int(rng.integers(2**31)))
        if nx.is_connected(graph):
            return graph
    raise UserError(f"no connected {what} in {MAX_RESAMPLES} draws; increase it")


@register_topology("random_regular")
def _random_regular(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    """A uniformly random d-regular graph (d = topology.degree), redrawn until connected."""
    _check_degree(cfg, n)
    return _resample(
        lambda s: nx.random_regular_graph(cfg.degree, n, seed=s), rng, "graph: topology.degree"
    )


@register_topology("erdos_renyi")
def _erdos_renyi(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    """G(n, p) (p = topology.p), redrawn until connected."""
    return _resample(lambda s: nx.gnp_random_graph(n, cfg.p, seed=s), rng, "graph: topology.p")


@register_topology("edges")
def _explicit(cfg: TopologyConfig, n: int, rng: np.random.Generator) -> nx.Graph:
    """``topology.edges``, or ``topology.file`` read by ``read_edge_file``."""
    if cfg.edges is not None:
        pairs, key = list(cfg.edges), "topology.edges"
    elif cfg.file is not None:
        pairs, key = read_edge_file(cfg.file, cfg.hosts), f"topology.file={cfg.file}"
    else:
        raise UserError("topology.name=edges needs topology.edges or topology.file")
    graph = nx.empty_graph(n)
    for i, j in pairs:
        if not (0 <= i < n and 0 <= j < n):
            raise UserError(f"{key}: edge ({i}, {j}) is outside nodes 0..{n - 1} (data.nodes)")
        if i == j:
            raise UserError(f"{key}: self-loop ({i}, {i}); remove it")
        graph.add_edge(i, j)
    if not nx.is_connected(graph):
        parts = len(list(nx.connected_components(graph)))
        raise UserError(f"{key}: the graph has {parts} disconnected parts; add edges joining them")
    return graph


def read_edge_file(path: Path, hosts: Path | None = None) -> list[tuple[int, int]]:
    """Edges from a file: text lines ``i j`` (``#`` comments), JSON ``[[i, j], ...]``, or
    reference system 001's ``node_list.json`` (a JSON object with ``"nodes"``, see
    ``load_seed_node_list``)."""
    text = read_text(path, "topology.file", "lines 'i j', JSON pairs or node_list.json")
    if not text.lstrip().startswith(("[", "{")):
        try:
            rows = [line.split("#")[0].split() for line in text.splitlines()]
            return [(int(r[0]), int(r[1])) for r in rows if r]
        except (ValueError, IndexError):
            raise UserError(f"topology.file={path}: expected lines 'i j'") from None
    data = _read_json(path, "topology.file")
    if isinstance(data, dict):
        return load_seed_node_list(path, hosts)[0]
    try:
        return [(int(i), int(j)) for i, j in data]
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"topology.file={path}: expected a JSON list of [i, j] pairs") from None


def _read_json(path: Path, what: str) -> Any:
    text = read_text(path, what, "JSON")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        detail = exc if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
        raise UserError(f"cannot parse {path}: {detail}") from None


def load_seed_node_list(
    node_list: Path, hosts: Path | None = None
) -> tuple[list[tuple[int, int]], list[str] | None]:
    """Read reference system 001's P2P configuration: (undirected edges, ``"addr:port"`` per
    node or None).

    Accepted ``node_list.json`` formats (NTT's ``ecl-isvr`` and ``edge-consensus-learning``):

    * ``{"nodes": {"node0": {"round": 8, "edges": {"node1": 4, "node7": 0}}, ...}}`` — edges
      map neighbour names to exchange offsets (``edges`` may also be a list of names);
    * ``{"nodes": [{"name": "node0", "addr": "host", "port": "9997", "edges": ["node1"]}, ...]}``.

    ``hosts.json``: ``{"hosts": [{"name": "node0", "addr": "host", "port": "10000"}, ...]}`` (or
    a mapping ``{"node0": {"addr": ..., "port": ...}}``). Node indices follow the order of the
    hosts file when given (as in the reference), else the order of ``nodes``. An edge listed by
    either end counts. The per-edge offsets and ``round``: ``load_seed_offsets``.
    """
    nodes = _node_list(node_list, hosts)
    edges: set[tuple[int, int]] = set()
    for (i, j) in nodes.directed:
        if i != j:
            edges.add((min(i, j), max(i, j)))
    return sorted(edges), nodes.hosts


@dataclass
class _NodeList:
    """A parsed node list: directed entries (i, j) → offset (None when only named), each
    node's ``round`` (None when absent) and the host list."""

    directed: dict[tuple[int, int], int | None]
    rounds: list[int | None]
    hosts: list[str] | None
    names: list[str]


def _node_list(node_list: Path, hosts: Path | None) -> _NodeList:
    data = _read_json(node_list, "topology.file")
    nodes = data.get("nodes") if isinstance(data, dict) else None
    if isinstance(nodes, list):
        entries = {str(e.get("name")): e for e in nodes if isinstance(e, dict)}
    elif isinstance(nodes, dict):
        entries = {str(k): v for k, v in nodes.items() if isinstance(v, dict)}
    else:
        raise UserError(f"{node_list}: expected a JSON object with a 'nodes' list or mapping")
    addrs = {name: f"{e['addr']}:{e['port']}" for name, e in entries.items() if "addr" in e}
    names = list(entries)
    if hosts is not None:
        addrs = read_hosts(hosts)
        missing = sorted(set(names) - set(addrs))
        if missing:
            raise UserError(f"{hosts}: no host for nodes {', '.join(missing)} of {node_list}")
        names = list(addrs)
    index = {name: i for i, name in enumerate(names)}
    directed: dict[tuple[int, int], int | None] = {}
    rounds: list[int | None] = [None] * len(names)
    for name, entry in entries.items():
        listed = entry.get("edges", [])
        for other in listed:
            if other not in index:
                raise UserError(f"{node_list}: node {name} lists unknown neighbour {other!r}")
            offset = listed[other] if isinstance(listed, dict) else None
            if offset is not None and not isinstance(offset, int):
                raise UserError(f"{node_list}: node {name}: the offset of {other} must be an "
                                f"integer, not {offset!r}")
            directed[(index[name], index[other])] = offset
        if isinstance(entry.get("round"), int):
            rounds[index[name]] = entry["round"]
    host_list = [addrs[name] for name in names] if len(addrs) == len(names) else None
    return _NodeList(directed, rounds, host_list, names)


def _is_node_list(cfg: TopologyConfig) -> bool:
    return cfg.name == "edges" and cfg.file is not None and cfg.file.is_file() and \
        isinstance(_read_json(cfg.file, "topology.file"), dict)


def node_names(cfg: TopologyConfig) -> list[str] | None:
    """The node names of reference system 001's ``node_list.json`` in node order (the hosts
    file's order when ``topology.hosts`` is given), or None for other graphs. They label the
    nodes' records (``nodes/<name>.csv``, ``metrics.csv``), so they must be usable as file
    names and differ from the reserved labels ``mean`` and ``global``."""
    if not _is_node_list(cfg):
        return None
    assert cfg.file is not None
    names = _node_list(cfg.file, cfg.hosts).names
    for name in names:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or name in ("mean", "global"):
            raise UserError(f"topology.file={cfg.file}: node name {name!r} cannot name the "
                            "node's records (nodes/<name>.csv); use letters, digits, '.', '_' "
                            "and '-', and not 'mean' or 'global'")
    return names


def file_schedule(cfg: TopologyConfig) -> bool:
    """Whether ``topology.file`` is a node list that gives per-edge exchange offsets."""
    if not _is_node_list(cfg):
        return False
    assert cfg.file is not None
    return bool(load_seed_offsets(cfg.file, cfg.hosts)[1])


def load_seed_offsets(node_list: Path, hosts: Path | None = None
                      ) -> tuple[int | None, dict[tuple[int, int], int]]:
    """Reference system 001's exchange schedule from ``node_list.json``: (the nodes' common
    ``round`` K, or None when no node gives one; {(i, j): offset}), where node i starts an
    exchange with neighbour j after its own local step t when t mod K == offset (each end of
    an edge has its own offset). Nodes with different rounds are an error."""
    nodes = _node_list(node_list, hosts)
    given = {r for r in nodes.rounds if r is not None}
    if len(given) > 1:
        raise UserError(f"{node_list}: the nodes have different rounds {sorted(given)}; "
                        "fedweave uses one algorithm.exchange_period for every node")
    offsets = {e: o for e, o in nodes.directed.items() if o is not None}
    return (given.pop() if given else None), offsets


def directed_offsets(cfg: TopologyConfig, edges: torch.Tensor, period: int) -> torch.Tensor:
    """int64 [2E] offsets of the directed slots (slot e: i→j, slot E + e: j→i for edge
    e = (i, j), i < j) read from ``topology.file`` (``load_seed_offsets``); −1 where the file
    gives node i no offset towards j (i never starts that exchange). The file's ``round``
    must equal ``period`` (``algorithm.exchange_period``)."""
    if not _is_node_list(cfg) or cfg.file is None:
        raise UserError("algorithm.offsets=file reads the offsets from topology.file: set "
                        "topology.name=edges and topology.file to a node_list.json of reference "
                        "system 001 (e.g. configs/topologies/node_list.n8.random.round8.json)")
    k, offsets = load_seed_offsets(cfg.file, cfg.hosts)
    if not offsets:
        raise UserError(f"topology.file={cfg.file} gives no per-edge offsets (its 'edges' are "
                        "lists); use algorithm.offsets=colouring")
    if k is not None and k != period:
        raise UserError(f"topology.file={cfg.file} has round {k} but algorithm.exchange_period="
                        f"{period}: set algorithm.exchange_period={k}")
    bad = sorted(o for o in offsets.values() if not 0 <= o < period)
    if bad:
        raise UserError(f"topology.file={cfg.file}: offset {bad[-1]} is outside 0..{period - 1} "
                        f"(algorithm.exchange_period={period})")
    pairs = [*map(tuple, edges.tolist()), *((j, i) for i, j in edges.tolist())]
    return torch.tensor([offsets.get((i, j), -1) for i, j in pairs], dtype=torch.int64)


@dataclass(frozen=True)
class Host:
    """One entry of reference system 001's ``hosts.json``."""

    name: str
    addr: str
    port: int


_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


def read_host_list(path: Path) -> list[Host]:
    """The entries of a ``hosts.json`` in file order: ``{"hosts": [{"name", "addr", "port"},
    ...]}`` or the mapping ``{"node0": {"addr": ..., "port": ...}}``. Refused with one line: a
    name listed twice, a port that is not an integer 1–65535 (``"10000"`` and ``10000`` are
    both accepted, as in the reference's files), two entries on the same address and port
    (``localhost``, ``127.0.0.1`` and ``::1`` count as one address)."""
    data = _read_json(path, "topology.hosts")
    error = UserError(f"{path}: expected {{'hosts': [{{'name', 'addr', 'port'}}, ...]}}")
    if isinstance(data, dict) and isinstance(data.get("hosts"), list):
        if not all(isinstance(h, dict) for h in data["hosts"]):
            raise error
        pairs = [(str(h.get("name")), h) for h in data["hosts"]]
    elif isinstance(data, dict):
        pairs = [(str(name), h) for name, h in data.items()]
    else:
        raise error
    hosts: list[Host] = []
    seen: dict[tuple[str, int], str] = {}
    for name, h in pairs:
        if not isinstance(h, dict) or "addr" not in h or "port" not in h:
            raise error
        if any(name == other.name for other in hosts):
            raise UserError(f"{path}: host {name} is listed twice; give every host its own name")
        port = h["port"]
        if not (isinstance(port, int) and not isinstance(port, bool)) and \
                not (isinstance(port, str) and re.fullmatch(r"[0-9]{1,5}", port)):
            raise UserError(f"{path}: host {name} has port {port!r}; a port is an integer "
                            "1-65535")
        if not 1 <= int(port) <= 65535:
            raise UserError(f"{path}: host {name} has port {port!r}; a port is an integer "
                            "1-65535")
        host = Host(name, str(h["addr"]), int(port))
        addr = host.addr.strip("[]").lower()
        key = ("loopback" if addr in _LOOPBACK else addr, host.port)
        if key in seen:
            raise UserError(f"{path}: hosts {seen[key]} and {name} both use {host.addr}:"
                            f"{host.port}; give each host on one address its own port")
        seen[key] = name
        hosts.append(host)
    if not hosts:
        raise error
    return hosts


def read_hosts(path: Path) -> dict[str, str]:
    """``{name: "addr:port"}`` of a ``hosts.json`` in file order (``read_host_list``)."""
    return {h.name: f"{h.addr}:{h.port}" for h in read_host_list(path)}


def mixing_matrix(graph: nx.Graph, kind: str) -> torch.Tensor:
    """The float64 [n, n] gossip matrix W of ``graph`` (d_i = degree of node i).

    * ``metropolis`` (Metropolis–Hastings; Xiao & Boyd 2004, "Fast linear iterations for
      distributed averaging"): w_ij = 1/(max(d_i, d_j) + 1) on edges, w_ii = 1 − Σ_j w_ij.
      Symmetric and doubly stochastic.
    * ``uniform``: w_ij = 1/(d_i + 1) over the closed neighbourhood of i (reference system 001). Row
      stochastic only: not doubly stochastic on irregular graphs.
    * ``max_degree``: w_ij = 1/(d_max + 1) on edges, w_ii = 1 − d_i/(d_max + 1). Symmetric and
      doubly stochastic.
    """
    n = graph.number_of_nodes()
    deg = torch.tensor([graph.degree[i] for i in range(n)], dtype=torch.float64)
    edges = edge_list(graph)
    i, j = edges[:, 0], edges[:, 1]
    w = torch.zeros(n, n, dtype=torch.float64)
    if kind == "metropolis":
        w[i, j] = 1.0 / (torch.maximum(deg[i], deg[j]) + 1.0)
        w[j, i] = w[i, j]
        w += torch.diag(1.0 - w.sum(dim=1))
    elif kind == "uniform":
        w[i, j] = 1.0 / (deg[i] + 1.0)
        w[j, i] = 1.0 / (deg[j] + 1.0)
        w += torch.diag(1.0 / (deg + 1.0))
    elif kind == "max_degree":
        scale = 1.0 / (float(deg.max()) + 1.0)
        w[i, j] = scale
        w[j, i] = scale
        w += torch.diag(1.0 - deg * scale)
    else:
        raise UserError(f"topology.mixing={kind!r}: choose one of metropolis, uniform, max_degree")
    return w


def spectral_gap(w: torch.Tensor) -> float:
    """1 − |λ_2|, |λ_2| the second largest eigenvalue modulus of W (1.0 for one node).

    Consensus error of x ← Wx contracts like |λ_2|^t (Xiao & Boyd 2004).
    """
    if w.shape[0] == 1:
        return 1.0
    moduli = torch.linalg.eigvals(w.to(torch.float64)).abs().sort(descending=True).values
    return float(1.0 - moduli[1])


def edge_list(graph: nx.Graph) -> torch.Tensor:
    """int64 [E, 2] with i < j in each row, rows sorted: the stable edge order of edge duals."""
    rows = sorted((min(i, j), max(i, j)) for i, j in graph.edges)
    return torch.tensor(rows, dtype=torch.int64).reshape(-1, 2)


def exchange_schedule(edges: torch.Tensor, n: int, period: int) -> torch.Tensor:
    """int64 [E] offsets: edge e exchanges at steps t with t % period == offset[e].

    ECL-ISVR (Niwa et al. 2021): each edge swaps once per ``period`` steps. With
    ``period ≥ Δ + 1`` (Δ the max degree) the offsets are a proper edge colouring by Misra &
    Gries' constructive proof of Vizing's theorem (1992), so no node has two exchanges in one
    step; edges are then moved to less loaded offsets where that stays proper. With a shorter
    period a greedy pass picks, per edge, the offset with the fewest clashes at its ends, then
    the fewest edges.
    """
    pairs = [(min(i, j), max(i, j)) for i, j in edges.tolist()]
    degree = np.bincount(np.asarray(pairs, dtype=np.int64).reshape(-1), minlength=n)
    max_degree = int(degree.max()) if pairs else 0
    if period >= max_degree + 1:
        colours = _misra_gries(pairs, n, max_degree + 1)
        offsets = [colours[p] for p in pairs]
        _balance(pairs, offsets, n, period)
    else:
        offsets = _greedy(pairs, n, period)
    return torch.tensor(offsets, dtype=torch.int64)


def _greedy(pairs: list[tuple[int, int]], n: int, period: int) -> list[int]:
    busy = np.zeros((n, period), dtype=np.int64)
    load = np.zeros(period, dtype=np.int64)
    offsets = []
    for i, j in pairs:
        o = min(range(period), key=lambda c: (busy[i, c] + busy[j, c], load[c], c))
        busy[i, o] += 1
        busy[j, o] += 1
        load[o] += 1
        offsets.append(o)
    return offsets


def _balance(pairs: list[tuple[int, int]], offsets: list[int], n: int, period: int) -> None:
    """Move edges to less loaded offsets free at both ends (keeps a proper colouring)."""
    busy = np.zeros((n, period), dtype=bool)
    load = np.zeros(period, dtype=np.int64)
    for (i, j), o in zip(pairs, offsets, strict=True):
        busy[i, o] = busy[j, o] = True
        load[o] += 1
    moved = True
    while moved:  # every move lowers Σ load², so this ends
        moved = False
        for e, (i, j) in enumerate(pairs):
            o = offsets[e]
            free = [c for c in range(period) if not busy[i, c] and not busy[j, c]]
            best = min(free, key=lambda c: (load[c], c), default=o)
            if load[best] + 1 < load[o]:
                busy[i, o] = busy[j, o] = False
                busy[i, best] = busy[j, best] = True
                load[o] -= 1
                load[best] += 1
                offsets[e] = best
                moved = True


def _misra_gries(pairs: list[tuple[int, int]], n: int, ncol: int) -> dict[tuple[int, int], int]:
    """A proper edge colouring with ``ncol = Δ + 1`` colours (Misra & Gries 1992)."""
    at: list[dict[int, int]] = [{} for _ in range(n)]  # at[x][colour] = neighbour

    def free(x: int) -> int:
        return next(c for c in range(ncol) if c not in at[x])

    def paint(x: int, y: int, c: int) -> None:
        at[x][c] = y
        at[y][c] = x

    def colour_of(x: int, y: int) -> int:
        return next(c for c, z in at[x].items() if z == y)

    for u, v in pairs:
        fan, seen = [v], {v}
        while True:  # maximal fan of u starting at v
            nxt = next(
                (w for c, w in at[u].items() if w not in seen and c not in at[fan[-1]]), None
            )
            if nxt is None:
                break
            fan.append(nxt)
            seen.add(nxt)
        c, d = free(u), free(fan[-1])
        if c != d:  # invert the cd-path from u (it starts with a d edge)
            path, x, col = [], u, d
            while col in at[x]:
                y = at[x][col]
                path.append((x, y, col))
                x, col = y, (c if col == d else d)
            for x, y, col in path:
                del at[x][col], at[y][col]
            for x, y, col in path:
                paint(x, y, c if col == d else d)
        for k, w in enumerate(fan):  # first w with d free whose prefix is still a fan
            if k > 0 and colour_of(u, w) in at[fan[k - 1]]:
                raise AssertionError("Misra-Gries: no fan prefix ends free of d")  # cannot happen
            if d not in at[w]:
                shifted = [colour_of(u, f) for f in fan[1 : k + 1]]
                for f, col in zip(fan[1 : k + 1], shifted, strict=True):
                    del at[u][col], at[f][col]
                for f, col in zip(fan[:k], shifted, strict=True):
                    paint(u, f, col)
                paint(u, w, d)
                break
    return {(x, y): c for x in range(n) for c, y in at[x].items() if x < y}


def plot_graph(graph: nx.Graph, w: torch.Tensor | None, path: Path) -> None:
    """Draw the graph to ``path``: circular layout for ring-like topologies, a seeded spring
    layout otherwise; edge width proportional to the mixing weight w_ij when ``w`` is given."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    name = graph.graph.get("topology")
    pos = nx.circular_layout(graph) if name in _CIRCULAR else nx.spring_layout(graph, seed=0)
    widths = [1.5] * graph.number_of_edges()
    if w is not None and graph.number_of_edges():
        weights = [float(w[i, j]) for i, j in graph.edges]
        widths = [0.5 + 4.0 * x / max(weights) for x in weights]
    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    nx.draw_networkx(graph, pos, ax=ax, width=widths, node_color="#8ecae6", font_size=8)
    gap = f", spectral gap {spectral_gap(w):.3f}" if w is not None else ""
    ax.set_title(f"{name or 'graph'}: {graph.number_of_nodes()} nodes{gap}")
    ax.set_axis_off()
    fig.savefig(path, dpi=120, bbox_inches="tight")
