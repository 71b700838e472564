"""Asynchronous federated learning on the virtual clock: FedAsync, FedBuff, FedFix and PR-FL
(policies on ``base.AsyncAlgorithm``'s event loop). Each module registers its algorithm when
imported (``fedweave.algorithms.ALGORITHMS`` imports it on first use)."""
