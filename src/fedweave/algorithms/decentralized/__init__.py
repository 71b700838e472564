"""Decentralized (peer-to-peer) algorithms: importing this package registers them all."""

from fedweave.algorithms.decentralized import (
    base,
    cadmm,
    dsgd,
    duals,
    edge_consensus,
    gossip,
    isvr,
    tracking,
)

__all__ = ["base", "cadmm", "dsgd", "duals", "edge_consensus", "gossip", "isvr", "tracking"]
