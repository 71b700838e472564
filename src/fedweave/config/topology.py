"""The ``topology`` section: the peer graph of decentralized algorithms."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from fedweave.config.base import RootView, Section, changed


class TopologyConfig(Section):
    """The communication graph of decentralized algorithms."""

    name: str = Field("ring", description="a registered topology (fedweave.topology)")
    mixing: Literal["metropolis", "uniform", "max_degree"] = Field(
        "metropolis", description="mixing matrix W: metropolis (doubly stochastic), uniform "
        "(1/(deg+1), reference system 001), max_degree")
    degree: int = Field(3, ge=1, description="random_regular: degree of every node")
    p: float = Field(0.3, gt=0, le=1, description="erdos_renyi: edge probability")
    edges: list[tuple[int, int]] | None = Field(None, description="edges: the edge list "
                                                "[[i, j], ...]")
    file: Path | None = Field(None, description="edge list file, or reference system "
                              "001's node_list.json")
    hosts: Path | None = Field(None, description="reference system 001's hosts.json (for "
                               "torchrun)")

    def check(self, config: RootView) -> None:
        """Topology keys act on decentralized algorithms only."""
        alg = config.algorithm
        if alg.kind != "decentralized":
            keys = changed(self)
            if keys:
                raise ValueError(
                    f"topology.{keys[0]} applies to decentralized algorithms only; "
                    f"algorithm.name={alg.name} is {alg.kind}: remove the topology section")
