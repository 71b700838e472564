"""Decentralized (peer-to-peer) algorithms. Each module registers its algorithms when imported
(``fedweave.algorithms.ALGORITHMS`` imports it on first use)."""
