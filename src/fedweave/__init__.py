"""fedweave: fast, deterministic collaborative-learning research (federated, decentralized,
one-shot, data influence) in one package."""

__version__ = "0.1.0"
