"""The idle cores take independent pieces of a step (``fedweave.training.workers``): the
numbers are bit-identical to running the pieces in turn, for the loop engine (nodes, one model
copy each), the fused engine (chunks of rows, evaluation batches) and a run whose threads the
user pinned (no workers)."""

from __future__ import annotations

import pytest

from fedweave.runner import run
from fedweave.training.workers import run_all, set_workers, workers
from tests.conftest import small_config

CASES = {
    "loop-cnn": ["model.name=cnn", "engine.name=loop", "data.nodes=6",
                 "algorithm.clients_per_round=5"],
    "fused-mlp": ["engine.name=fused", "data.nodes=20", "algorithm.clients_per_round=19",
                  "engine.chunk=2", "train.momentum=0.9"],
    "loop-dsgd": ["algorithm.name=dsgd", "topology.name=ring", "engine.name=loop"],
}


def _numbers(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in history]


@pytest.mark.parametrize("case", list(CASES))
def test_workers_give_the_same_bits(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    results = {}
    for cores in ("1", "2", "3"):
        monkeypatch.setenv("FEDWEAVE_CORES", cores)
        res = run(small_config("rounds=2", *CASES[case]), write=False)
        assert res.summary["environment"]["workers"] == int(cores)
        results[cores] = _numbers(res.history)
    assert results["1"] == results["2"] == results["3"]
    monkeypatch.setenv("FEDWEAVE_CORES", "2")
    pinned = run(small_config("rounds=2", "engine.threads=1", *CASES[case]), write=False)
    assert pinned.summary["environment"]["workers"] == 1
    assert _numbers(pinned.history) == results["1"]


def test_run_all_keeps_order_raises_and_never_nests() -> None:
    set_workers(3)
    try:
        assert workers() == 3
        assert run_all(lambda i: i * i, range(7)) == [0, 1, 4, 9, 16, 25, 36]
        assert run_all(lambda i: run_all(lambda j: (i, j), range(2)), range(3)) == \
            [[(i, 0), (i, 1)] for i in range(3)]

        def boom(i: int) -> int:
            if i == 2:
                raise ValueError("piece 2")
            return i

        with pytest.raises(ValueError, match="piece 2"):
            run_all(boom, range(4))
    finally:
        set_workers(1)
