"""One-shot federated learning by data-free distillation (reference system 003): DeepInversion /
Adaptive DeepInversion (``deepinversion``), the student (``student``) and synthetic batches
(``synthetic``). The teachers are trained by the local-only algorithm
(``algorithms.federated.local_only``); the ``fedweave distill`` workflow is
``fedweave.workflows.distill``."""
