"""Data influence in federated and decentralized learning (reference system 000): scorers
(registry ``influence.scorer``; higher = more helpful), the scoring of finished runs
(``fedweave influence``) and the prune-and-retrain pipeline (``fedweave prune``)."""

from fedweave.influence import (  # noqa: F401  (register the built-in scorers)
    dice,
    el2n,
    forgetting,
    if_ekfac,
    loo,
    random,
    tracin,
)
from fedweave.influence.base import SCORERS, ScoredRun, Scorer, Scores, register_scorer

__all__ = ["SCORERS", "ScoredRun", "Scorer", "Scores", "register_scorer"]
