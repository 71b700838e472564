"""Multi-stage runs built on the runner: prune-and-retrain (``prune``), one-shot
distillation (``distill``, ``teachers``), sweeps (``sweep``); ``stages`` is the
resumable stage machinery they share."""
