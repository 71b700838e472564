"""Byzantine robustness: attacks (``attacks``: model attacks and who attacks; ``data``: data
attacks) and faults of what nodes send; the robust aggregation rules live with the aggregator
seam (``fedweave.aggregators``)."""
