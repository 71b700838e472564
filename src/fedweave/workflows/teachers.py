"""The trained teachers on disk and their scores.

``teachers.safetensors`` holds the T teachers' flat parameters ``params[T, P]``, their stacked
buffers (``buffers/<name>``), each teacher's class counts ``counts[T, C]`` and class mask, and
as metadata the fingerprint of the settings that trained them, so another run may reuse them
(``--teachers``) only when its teacher settings are the same.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fedweave.algorithms.oneshot.deepinversion import Teachers
from fedweave.config import Config, DistillConfig, config_to_dict
from fedweave.core.population import ParamLayout
from fedweave.data.federated import FederatedData
from fedweave.errors import UserError
from fedweave.records.rundir import first_difference

TEACHERS_FILE = "teachers.safetensors"


def teacher_config(config: Config) -> Config:
    """The teachers stage's run: the distill config without its distill section."""
    return config.model_copy(update={"name": f"{config.name}-teachers",
                                     "distill": DistillConfig()})


def teacher_fingerprint(config: Config) -> dict[str, Any]:
    """What decides the teachers: everything but the run's name, output, engine, plugins and
    the distill keys that act after the teachers (JSON-normalised)."""
    data = config_to_dict(config)
    for key in ("name", "output", "engine", "plugins"):
        data.pop(key, None)
    data["distill"] = {"student_shards": config.distill.student_shards}
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return out


def write_teachers(path: Path, params: torch.Tensor, buffers: dict[str, torch.Tensor],
                   counts: torch.Tensor, fingerprint: dict[str, Any]) -> None:
    """The teachers file, atomically."""
    tensors = {"params": params, "counts": counts, "mask": (counts > 0).to(torch.uint8),
               **{f"buffers/{k}": v for k, v in buffers.items()}}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp),
              metadata={"fingerprint": json.dumps(fingerprint)})
    tmp.replace(path)


def read_teachers(path: Path, template: nn.Module, device: torch.device) -> Teachers:
    """The teachers of ``path`` on ``template``'s architecture."""
    try:
        t = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the teachers ({exc}); start a new run") from None
    params = ParamLayout.of(template).views(t["params"])
    buffers = {k.removeprefix("buffers/"): v for k, v in t.items() if k.startswith("buffers/")}
    counts = t["counts"].double()
    freq = (counts / counts.sum(1, keepdim=True).clamp(min=1)).float()
    return Teachers(template, params, buffers, t["mask"].bool(), freq)


def matching_teachers(src: Path, fingerprint: dict[str, Any], option: str = "--teachers"
                      ) -> Path:
    """The teachers file of the distill run ``src`` if they were trained with the settings
    ``fingerprint``; ``UserError`` naming ``option`` otherwise."""
    for candidate in (src / "teachers" / TEACHERS_FILE, src / TEACHERS_FILE):
        if candidate.is_file():
            break
    else:
        raise UserError(f"{option} {src}: no trained teachers there (expected "
                        f"{src}/teachers/{TEACHERS_FILE}, from a finished teachers stage)")
    try:
        with safe_open(str(candidate), "pt") as f:
            theirs = json.loads((f.metadata() or {})["fingerprint"])
    except (SafetensorError, OSError, ValueError, KeyError):
        raise UserError(f"{option} {src}: {candidate} is damaged") from None
    if theirs != fingerprint:
        key = first_difference(theirs, fingerprint)
        raise UserError(f"{option} {src}: those teachers were trained with another {key} "
                        "than this config; use the same teacher settings or train new ones")
    return candidate


def copy_teachers(src: Path, folder: Path, fingerprint: dict[str, Any]) -> Path:
    """Copy the teachers of the distill run ``src`` into ``folder`` if they were trained with
    the same settings (``fingerprint``); returns the file copied."""
    candidate = matching_teachers(src, fingerprint)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(candidate, folder / TEACHERS_FILE)
    return candidate


@torch.no_grad()
def evaluate_teachers(teachers: Teachers, data: FederatedData,
                      val_idx: list[torch.Tensor]) -> dict[str, Any]:
    """Each teacher's test accuracy (on the whole test set and on the test samples of its own
    classes) and accuracy on its client's validation split; the ensemble's test accuracy."""
    y = data.test_y
    logits = teachers.logits(data.features(data.test_x))  # [T, N, C]
    correct = logits.argmax(-1) == y
    own = teachers.mask[:, y]
    val_acc = []
    for t, idx in enumerate(val_idx):
        if len(idx):
            pred = teachers.logits(data.features(data.x[idx]))[t].argmax(-1)
            val_acc.append(float((pred == data.y[idx]).float().mean()))
        else:
            val_acc.append(float("nan"))
    ensemble = float((torch.softmax(logits, -1).mean(0).argmax(-1) == y).float().mean())
    return {
        "test_acc": correct.float().mean(1).tolist(),
        "test_acc_own_classes": [float(correct[t][own[t]].float().mean())
                                 for t in range(teachers.count)],
        "val_acc": val_acc,
        "classes": [torch.nonzero(m).flatten().tolist() for m in teachers.mask.cpu()],
        "ensemble": {"test_acc": ensemble},
    }
