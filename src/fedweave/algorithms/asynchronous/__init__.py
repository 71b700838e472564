"""Asynchronous federated learning on the virtual clock: FedAsync, FedBuff, FedFix and PR-FL
(policies on ``base.AsyncAlgorithm``'s event loop)."""

from fedweave.algorithms.asynchronous import fedasync, fedbuff, fedfix, prfl

__all__ = ["fedasync", "fedbuff", "fedfix", "prfl"]
