"""Federated algorithms (server + clients, synchronous rounds): FedAvg/FedProx, SCAFFOLD,
clustered FedAvg, HeteroFL (width-sliced submodels), centralized and local-only training."""

from fedweave.algorithms.federated import (
    centralized,
    clustered,
    fedavg,
    heterofl,
    local_only,
    scaffold,
)

__all__ = ["centralized", "clustered", "fedavg", "heterofl", "local_only", "scaffold"]
