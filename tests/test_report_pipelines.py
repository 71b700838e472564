"""``fedweave report`` accepts ``fedweave prune`` and ``fedweave distill`` directories: each
training stage with records becomes one run of the report, named ``<directory>/<stage>``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from fedweave.errors import UserError
from fedweave.plugins import load_config
from fedweave.records.report import collect, write_report
from fedweave.workflows.distill import distill
from fedweave.workflows.prune import PrunePipeline
from fedweave.workflows.stages import Pipeline, Stage

TINY_PRUNE = ["algorithm.name=dsgd", "topology.name=ring", "model.name=mlp", "model.hidden=[8]",
              "data.nodes=2", "data.train_samples=300", "rounds=2", "output.plots=false",
              "output.progress=false", "engine.name=loop"]
TINY_DISTILL = ["algorithm.name=local", "rounds=1", "data.nodes=2", "data.partition=iid",
                "data.train_samples=300", "model.name=cnn", "model.norm=batch", "model.width=0.25",
                "engine.threads=1", "output.plots=false", "output.progress=false",
                "distill.synthesis.iterations=2", "distill.synthesis.batch_size=8",
                "distill.synthesis.initial_batches=2", "distill.student.epochs=1",
                "distill.student.steps_per_epoch=1", "distill.student.batch_size=8",
                "distill.student.new_batches_per_epoch=0", "distill.baselines=[]"]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    threads = torch.get_num_threads()
    tmp = tmp_path_factory.mktemp("pipelines")
    cfg = load_config(None, [*TINY_PRUNE, f"output.dir={tmp / 'prune'}"])
    prune = PrunePipeline(cfg, "random", 0.5, "top")
    pipe = prune.create()
    prune.finish(pipe, pipe.run())
    result = distill(load_config(None, [*TINY_DISTILL, f"output.dir={tmp / 'distill'}"]))
    torch.set_num_threads(threads)
    return pipe.root, result.run_dir


def test_prune_and_distill_directories_are_reported_stage_by_stage(dirs, tmp_path) -> None:
    prune_dir, distill_dir = dirs
    runs, _ = collect([prune_dir, distill_dir])
    assert [r.name for r in runs] == [f"{prune_dir.name}/stage1", f"{prune_dir.name}/stage2",
                                      f"{distill_dir.name}/teachers",
                                      f"{distill_dir.name}/student"]
    assert all(0 <= r.final()["test_acc"] <= 1 for r in runs)
    page = write_report([prune_dir, distill_dir], tmp_path / "rep", formats=("png",)
                        ).read_text()
    text = re.sub(r"<[^>]+>", " ", page)
    for name in (f"{prune_dir.name}/stage2", f"{distill_dir.name}/student"):
        assert name in text


def test_a_pipeline_without_records_yet_is_one_line(tmp_path: Path) -> None:
    cfg = load_config(None, [f"output.dir={tmp_path}"])
    pipe = Pipeline.create(cfg, [Stage("score", lambda sc: {})], kind="prune")
    with pytest.raises(UserError, match="prune directory with no stage that has records"):
        collect([pipe.root])
