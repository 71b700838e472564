"""Split a labelled training set among nodes.

Every partitioner returns one sorted int64 index tensor per node; together they are disjoint and
(except ``natural`` with fewer nodes than groups) cover the whole training set. Randomness comes
from ``numpy_rng(seed, "partition")`` only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedweave.config import DataConfig
from fedweave.errors import UserError
from fedweave.registry import Registry
from fedweave.rng import numpy_rng

Partitioner = Callable[[np.ndarray, DataConfig, np.random.Generator, "np.ndarray | None"],
                       list[np.ndarray]]
PARTITIONERS: Registry[Partitioner] = Registry("partition")


def partition(labels: torch.Tensor, cfg: DataConfig, seed: int,
              groups: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Indices of each node's training samples (sorted), per ``cfg.partition``."""
    n = len(labels)
    if cfg.nodes * cfg.min_samples > n:
        raise UserError(
            f"data.nodes={cfg.nodes} needs at least {cfg.nodes * cfg.min_samples} training "
            f"samples (data.min_samples={cfg.min_samples} each) but the dataset has {n}: "
            "lower data.nodes or data.min_samples"
        )
    rng = numpy_rng(seed, "partition")
    y = labels.cpu().numpy()
    g = None if groups is None else groups.cpu().numpy()
    shards = PARTITIONERS.get(cfg.partition)(y, cfg, rng, g)
    return [torch.from_numpy(np.sort(s).astype(np.int64)) for s in shards]


@PARTITIONERS.register("iid")
def iid(y: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
        groups: np.ndarray | None) -> list[np.ndarray]:
    """Uniformly random, equal-sized shards."""
    return list(np.array_split(rng.permutation(len(y)), cfg.nodes))


@PARTITIONERS.register("dirichlet")
def dirichlet(y: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
              groups: np.ndarray | None) -> list[np.ndarray]:
    """Label skew: each class is split among nodes with proportions p ~ Dir(alpha·1)
    (Hsu et al. 2019). Redrawn until every node has ``min_samples`` (bounded tries)."""
    classes = np.unique(y)
    for _ in range(100):
        shards: list[list[np.ndarray]] = [[] for _ in range(cfg.nodes)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            p = rng.dirichlet(np.full(cfg.nodes, cfg.alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for node, part in enumerate(np.split(idx, cuts)):
                shards[node].append(part)
        out = [np.concatenate(s) for s in shards]
        if min(len(s) for s in out) >= cfg.min_samples:
            return out
    raise UserError(
        f"data.partition=dirichlet with alpha={cfg.alpha} cannot give all {cfg.nodes} nodes "
        f"data.min_samples={cfg.min_samples} samples: raise data.alpha or lower data.nodes"
    )


@PARTITIONERS.register("shards")
def shards(y: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
           groups: np.ndarray | None) -> list[np.ndarray]:
    """McMahan et al. 2017: sort by label, cut into nodes·shards_per_node shards, deal them."""
    count = cfg.nodes * cfg.shards_per_node
    if count > len(y):
        raise UserError(f"data.shards_per_node={cfg.shards_per_node} × data.nodes={cfg.nodes} "
                        f"exceeds the {len(y)} training samples: lower one of them")
    order = np.argsort(y, kind="stable")
    pieces = np.array_split(order, count)
    deal = rng.permutation(count).reshape(cfg.nodes, cfg.shards_per_node)
    return [np.concatenate([pieces[k] for k in row]) for row in deal]


@PARTITIONERS.register("classes")
def classes(y: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
            groups: np.ndarray | None) -> list[np.ndarray]:
    """Reference system 001's split: with o = ``class_order`` (the labels, a seeded shuffle or
    a given list) node i holds the window o[(s·i + j) mod C], j < ``classes_per_node``,
    s = ``class_shift``; each class is shared among its holders with weights ~ U(low, 1),
    normalised over the holders (a disjoint cover of the class's samples)."""
    labels = np.unique(y)
    c_total, k = len(labels), cfg.classes_per_node or len(labels)
    if k > c_total:
        raise UserError(f"data.classes_per_node={k} exceeds the {c_total} classes in the data")
    order = class_order(labels, cfg, rng)
    holders: dict[int, list[int]] = {int(c): [] for c in labels}
    for node in range(cfg.nodes):
        for j in range(k):
            holders[int(order[(cfg.class_shift * node + j) % c_total])].append(node)
    out: list[list[np.ndarray]] = [[] for _ in range(cfg.nodes)]
    share = rng.uniform(cfg.class_share_low, 1.0, size=(cfg.nodes, c_total))
    for ci, c in enumerate(labels):
        who = holders[int(c)]
        if not who:
            continue
        idx = rng.permutation(np.flatnonzero(y == c))
        w = share[who, ci] / share[who, ci].sum()
        cuts = (np.cumsum(w)[:-1] * len(idx)).astype(int)
        for node, part in zip(who, np.split(idx, cuts), strict=True):
            out[node].append(part)
    return [np.concatenate(parts) if parts else np.zeros(0, np.int64) for parts in out]


def class_order(labels: np.ndarray, cfg: DataConfig, rng: np.random.Generator) -> np.ndarray:
    """The class sequence of ``data.class_order``: ``natural`` (sorted labels), ``shuffled``
    (a permutation drawn from the partition stream) or the given list, which must name every
    class of the data once."""
    if cfg.class_order == "natural":
        return labels
    if cfg.class_order == "shuffled":
        return rng.permutation(labels)
    order = np.asarray(cfg.class_order, dtype=labels.dtype)
    if sorted(order.tolist()) != labels.tolist():
        raise UserError(f"data.class_order={list(cfg.class_order)} must list every class of the "
                        f"data once: {labels.tolist()} in some order")
    return order


@PARTITIONERS.register("quantity")
def quantity(y: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
             groups: np.ndarray | None) -> list[np.ndarray]:
    """Quantity skew: IID labels, shard sizes ∝ LogNormal(0, sigma), at least min_samples."""
    n = len(y)
    w = rng.lognormal(0.0, cfg.sigma, size=cfg.nodes)
    extra = n - cfg.nodes * cfg.min_samples
    sizes = cfg.min_samples + np.floor(w / w.sum() * extra).astype(int)
    sizes[: n - sizes.sum()] += 1  # hand out the rounding remainder
    return list(np.split(rng.permutation(n), np.cumsum(sizes)[:-1]))


@PARTITIONERS.register("natural")
def natural(y: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
            groups: np.ndarray | None) -> list[np.ndarray]:
    """The dataset's own grouping (FEMNIST writers, synthetic devices): ``nodes`` groups drawn
    at random, one per node; with ``natural_blocks`` every group is used, node k taking the
    k-th block of ⌊G/nodes⌋ consecutive group ids (the last block the rest), as PR-FL groups
    FEMNIST writers into its 10 clients."""
    if groups is None:
        raise UserError(f"data.partition=natural needs a dataset with natural groups "
                        f"(femnist, synthetic); {cfg.dataset!r} has none")
    ids, counts = np.unique(groups, return_counts=True)
    if cfg.nodes > len(ids):
        raise UserError(f"data.nodes={cfg.nodes} exceeds the {len(ids)} natural groups of "
                        f"{cfg.dataset!r}: lower data.nodes")
    if cfg.natural_blocks:
        per = len(ids) // cfg.nodes
        blocks = [ids[k * per: (k + 1) * per if k < cfg.nodes - 1 else len(ids)]
                  for k in range(cfg.nodes)]
        return [np.flatnonzero(np.isin(groups, b)) for b in blocks]
    chosen = ids if cfg.nodes == len(ids) else np.sort(rng.choice(ids, cfg.nodes, replace=False))
    # each group's indices in ascending order, by one stable sort (not one scan per group)
    members = np.split(np.argsort(groups, kind="stable"), np.cumsum(counts)[:-1])
    return [members[i] for i in np.searchsorted(ids, chosen)]


def split_validation(shards: list[torch.Tensor], fraction: float, seed: int,
                     from_train: bool = False, purpose: str = "validation"
                     ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per node: hold out ``fraction`` of its shard as validation (at least one sample stays
    for training): the shard positions ``perm[:n_val]`` of a permutation drawn from
    ``(seed, "validation", node)``, n_val = min(round(fraction·n), n − 1); both parts sorted.
    With ``from_train`` (reference system 001) validation is the whole training shard.
    ``purpose`` names the stream (``"client-test"``: each node's personal test split).

    One pass over all nodes: the per-node streams only mark positions in one flat array,
    the parts are cut out of it and sorted per node in bulk (views of two flat tensors), so
    100k nodes cost their generators, not 100k rounds of tensor operations."""
    if from_train:
        return list(shards), list(shards)
    counts = np.array([len(s) for s in shards], dtype=np.int64)
    flat = torch.cat(list(shards)).cpu().numpy() if len(shards) else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    n_val = np.array([min(round(fraction * int(n)), max(int(n) - 1, 0)) for n in counts],
                     dtype=np.int64)
    is_val = np.zeros(len(flat), dtype=bool)
    for node in np.flatnonzero(n_val):
        perm = numpy_rng(seed, purpose, int(node)).permutation(int(counts[node]))
        is_val[starts[node] + perm[: n_val[node]]] = True
    owner = np.repeat(np.arange(len(shards), dtype=np.int64), counts)

    def parts(mask: np.ndarray, sizes: np.ndarray) -> list[torch.Tensor]:
        order = np.lexsort((flat[mask], owner[mask]))  # by node, then index
        values = torch.from_numpy(np.ascontiguousarray(flat[mask][order]).astype(np.int64))
        return list(values.split(sizes.tolist()))

    return parts(~is_val, counts - n_val), parts(is_val, n_val)


def label_counts(labels: torch.Tensor, shards: list[torch.Tensor],
                 num_classes: int) -> torch.Tensor:
    """[nodes, classes] sample counts, for tables and the partition heatmap."""
    return torch.stack([torch.bincount(labels[s], minlength=num_classes) for s in shards])


@PARTITIONERS.register("heterogeneous")
def heterogeneous(y: np.ndarray, cfg: DataConfig, rng: np.random.Generator,
                  groups: np.ndarray | None) -> list[np.ndarray]:
    """Seed 003's ``heterogeneous(unif)`` split (Fed_distill's ``index_split_heter``): a random
    fraction ``unif`` of the samples is split uniformly among the nodes, the rest is sorted by
    label and cut into ``nodes`` contiguous pieces; node i gets the i-th piece of each.
    ``unif`` 1 is iid, 0.5 the seed's "heterogeneous", 0 disjoint label ranges."""
    order = rng.permutation(len(y))
    cut = int(len(y) * cfg.unif)
    uniform, rest = order[:cut], order[cut:]
    by_label = rest[np.argsort(y[rest], kind="stable")]
    return [np.concatenate([u, s]) for u, s in zip(np.array_split(uniform, cfg.nodes),
                                                   np.array_split(by_label, cfg.nodes),
                                                   strict=True)]
