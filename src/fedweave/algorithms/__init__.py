"""Algorithm registry: importing this package registers every built-in algorithm."""

from fedweave.algorithms import decentralized, federated, oneshot
from fedweave.algorithms.base import ALGORITHMS, Algorithm, register_algorithm

__all__ = ["ALGORITHMS", "Algorithm", "decentralized", "federated", "oneshot",
           "register_algorithm"]
