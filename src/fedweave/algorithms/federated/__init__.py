"""Federated algorithms (server + clients, synchronous rounds): FedAvg/FedProx, SCAFFOLD,
clustered FedAvg, HeteroFL (width-sliced submodels), centralized and local-only training. Each
module registers its algorithm when imported (``fedweave.algorithms.ALGORITHMS`` imports it on
first use)."""
