"""Running one algorithm on several processes: the distributed adapters of the gradient engine
and of local training (``parallel.adapters``) and the launch helpers (``parallel.launch``)."""
