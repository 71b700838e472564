"""Reference system 001's node_list.json as topology.file: the nodes keep their names in the
records and the file's exchange schedule is followed unless replaced on purpose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedweave.config import load_config
from fedweave.errors import UserError
from fedweave.runner import Runner, run


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def line3(tmp_path: Path, names=("alpha", "beta", "gamma"), round_=4) -> Path:
    """alpha — beta — gamma with reference system 001's per-edge offsets (K = 4)."""
    a, b, c = names
    nodes = {a: {"round": round_, "edges": {b: 1}},
             b: {"round": round_, "edges": {a: 3, c: 2}},
             c: {"round": round_, "edges": {b: 0}}}
    path = tmp_path / "node_list.json"
    path.write_text(json.dumps({"nodes": nodes}))
    return path


def config(node_list: Path, *overrides: str):
    base = ["data.dataset=digits", "data.nodes=3", "data.train_samples=240",
            "model.name=logistic", "train.batch_size=20", "rounds=2", "algorithm.name=dsgd",
            "algorithm.exchange_period=4", "topology.name=edges", f"topology.file={node_list}",
            "engine.name=loop", "output.plots=false", "output.progress=false"]
    return load_config(None, base + list(overrides))


def test_node_names_from_the_node_list_label_the_records(tmp_path):
    res = run(config(line3(tmp_path), f"output.dir={tmp_path / 'runs'}"))
    d = res.run_dir
    assert sorted(p.name for p in (d / "nodes").glob("*.csv")) == \
        ["alpha.csv", "beta.csv", "gamma.csv"]
    assert json.loads((d / "model.json").read_text())["labels"] == ["alpha", "beta", "gamma"]
    assert "gamma" in (d / "metrics.csv").read_text()


def test_the_files_schedule_is_kept_by_default_and_replaced_only_on_purpose(tmp_path):
    node_list = line3(tmp_path)
    auto = Runner(config(node_list), None).algo
    file = Runner(config(node_list, "algorithm.offsets=file"), None).algo
    colouring = Runner(config(node_list, "algorithm.offsets=colouring"), None).algo
    assert torch.equal(auto.offset, file.offset)
    assert auto.offset.tolist() == [1, 2, 3, 0]  # slots 0→1, 1→2, 1→0, 2→1
    assert not torch.equal(auto.offset, colouring.offset)
    for r in range(2):
        auto.round(r)
        file.round(r)
    assert torch.equal(auto.x, file.x)


def test_a_schedule_whose_round_is_not_the_period_is_refused_with_the_fix(tmp_path):
    cfg = config(line3(tmp_path, round_=8))
    with pytest.raises(UserError, match=r"set algorithm\.exchange_period=8"):
        Runner(cfg, None)
    Runner(config(line3(tmp_path, round_=8), "algorithm.offsets=colouring"), None)


def test_node_names_that_cannot_name_a_file_are_refused(tmp_path):
    with pytest.raises(UserError, match="cannot name the node's records"):
        Runner(config(line3(tmp_path, names=("a/b", "c", "d"))), None)
