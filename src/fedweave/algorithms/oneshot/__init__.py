"""One-shot federated learning by data-free distillation (reference system 003): local teachers
(``local``), DeepInversion / Adaptive DeepInversion (``deepinversion``), the student
(``student``) and the ``fedweave distill`` pipeline (``pipeline``, imported by the CLI only)."""

from fedweave.algorithms.oneshot import local  # noqa: F401  (registers algorithm.name: local)
