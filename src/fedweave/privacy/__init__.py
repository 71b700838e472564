"""Differential privacy: client-level DP-FedAvg (``client``), the accountants' ε
(``accountant``) and the target-ε stop (``budget``, a registered callback)."""

from fedweave.privacy import budget as budget
