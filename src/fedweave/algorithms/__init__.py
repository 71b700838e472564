"""Algorithm registry. The built-in algorithms are imported on first use
(``ALGORITHMS.get(name)``): a run imports only the one its config names."""

from fedweave.algorithms.base import ALGORITHMS, Algorithm, register_algorithm

__all__ = ["ALGORITHMS", "Algorithm", "register_algorithm"]
