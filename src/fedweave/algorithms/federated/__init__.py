"""Federated algorithms (server + clients, synchronous rounds) and the aggregators."""

from fedweave.algorithms.federated import aggregate, centralized, clustered, fedavg, scaffold

__all__ = ["aggregate", "centralized", "clustered", "fedavg", "scaffold"]
