"""Asynchronous and heterogeneous federated learning on the virtual clock:
FedAsync, FedBuff, FedFix and PR-FL (policies on ``base.AsyncAlgorithm``'s event loop),
HeteroFL (synchronous rounds of width-sliced submodels); ``records`` adds time to target,
traffic and per-client density records to every run."""

from fedweave.algorithms.asynchronous import fedasync, fedbuff, fedfix, heterofl, prfl, records

__all__ = ["fedasync", "fedbuff", "fedfix", "heterofl", "prfl", "records"]
