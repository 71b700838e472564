"""Federated algorithms (server + clients, synchronous rounds)."""

from fedweave.algorithms.federated import centralized, clustered, fedavg, scaffold

__all__ = ["centralized", "clustered", "fedavg", "scaffold"]
