"""Reusable synthesised batches (``distill.synthesis.batches_from``, reference system 003's
``initial.save_path`` flow): a second run copies the first run's initial batches (safetensors,
byte for byte) instead of synthesising, reuses its teachers, and its student equals the one
trained on those batches; a variant of the student trains on the same batches; a source that
cannot serve is one line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.workflows.distill import distill

TINY = ["algorithm.name=local", "rounds=1", "data.nodes=2", "data.partition=iid",
        "data.train_samples=300", "model.name=cnn", "model.norm=batch", "model.width=0.25",
        "engine.threads=1", "output.plots=false", "output.progress=false",
        "distill.synthesis.iterations=3", "distill.synthesis.batch_size=8",
        "distill.synthesis.initial_batches=3", "distill.student.epochs=2",
        "distill.student.steps_per_epoch=2", "distill.student.batch_size=8",
        "distill.student.new_batches_per_epoch=0", "distill.baselines=[]"]


@pytest.fixture(autouse=True)
def _threads() -> object:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Path:
    before = torch.get_num_threads()
    out = tmp_path_factory.mktemp("first")
    run_dir = distill(load_config(None, [*TINY, f"output.dir={out}"])).run_dir
    torch.set_num_threads(before)
    return run_dir


def checkpoint(run: Path, stage: str) -> dict[str, torch.Tensor]:
    return load_file(str(sorted((run / stage / "checkpoints").glob("*.safetensors"))[-1]))


def test_reused_batches_give_the_student_of_the_same_batches(first: Path, tmp_path) -> None:
    # synthesis settings that would take long if they ran: the stage must copy, not synthesise
    cfg = load_config(None, [*TINY, f"output.dir={tmp_path}", f"distill.synthesis.batches_from="
                             f"{first}", "distill.synthesis.iterations=100000"])
    second = distill(cfg)
    syn = second.summary["synthetic"]
    assert syn["generated"] == 0 and syn["reused"] == 3 and syn["reused_from"] == str(first)
    assert second.summary["teachers"]["reused_from"].startswith(str(first))
    for b in range(3):
        name = f"batch-{b:06d}.safetensors"
        assert (second.run_dir / "synthesize" / "batches" / name).read_bytes() == \
            (first / "synthesize" / "batches" / name).read_bytes()
    a, b_ = checkpoint(first, "student"), checkpoint(second.run_dir, "student")
    assert a.keys() == b_.keys() and all(torch.equal(a[k], b_[k]) for k in a)
    s1 = load_file(str(first / "synthetic.safetensors"))
    s2 = load_file(str(second.run_dir / "synthetic.safetensors"))
    assert torch.equal(s1["images"], s2["images"]) and torch.equal(s1["labels"], s2["labels"])


def test_a_student_variant_trains_on_the_same_batches(first: Path, tmp_path) -> None:
    cfg = load_config(None, [*TINY, f"output.dir={tmp_path}", f"distill.synthesis.batches_from="
                             f"{first}", "distill.student.lr=0.01"])
    variant = distill(cfg)
    assert variant.summary["synthetic"]["generated"] == 0
    a, b = checkpoint(first, "student"), checkpoint(variant.run_dir, "student")
    assert any(not torch.equal(a[k], b[k]) for k in a)  # another student ...
    s1 = load_file(str(first / "synthetic.safetensors"))
    s2 = load_file(str(variant.run_dir / "synthetic.safetensors"))
    assert torch.equal(s1["images"], s2["images"])  # ... of the same synthetic set


def test_a_source_that_cannot_serve_is_one_line(first: Path, tmp_path) -> None:
    with pytest.raises(UserError, match=r"initial batches are there"):
        distill(load_config(None, [*TINY, f"output.dir={tmp_path}",
                                   f"distill.synthesis.batches_from={first}",
                                   "distill.synthesis.initial_batches=5"]))
    with pytest.raises(UserError, match=r"batches_from .*trained with another seed"):
        distill(load_config(None, [*TINY, f"output.dir={tmp_path}", "seed=7",
                                   f"distill.synthesis.batches_from={first}"]))
    with pytest.raises(UserError, match=r"batches_from .*no trained teachers"):
        distill(load_config(None, [*TINY, f"output.dir={tmp_path}",
                                   f"distill.synthesis.batches_from={tmp_path}"]))
