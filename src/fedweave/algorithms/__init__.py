"""Algorithm registry: importing this package registers every built-in algorithm."""

from fedweave.algorithms import asynchronous, decentralized, federated, oneshot
from fedweave.algorithms.base import ALGORITHMS, Algorithm, register_algorithm

__all__ = ["ALGORITHMS", "Algorithm", "asynchronous", "decentralized", "federated", "oneshot",
           "register_algorithm"]
