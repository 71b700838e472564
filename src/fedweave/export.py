"""Trained models out of a run directory: plain PyTorch ``state_dict``s and ``nn.Module``s.

A checkpoint holds the algorithm's state as flat ``[P]`` vectors (``server/x`` for a
federated run's global model, ``x[M, P]`` for the models of the centralized reference,
clustered FedAvg's clusters or a decentralized run's nodes) plus buffers; the parameter
layout (``core.population.ParamLayout``) maps a vector back to named tensors of the model
built from the run's own ``config.yaml`` (and ``model.json``: input shape, classes). Nothing
here executes code from the run directory: safetensors and json only.

    fedweave export RUN_DIR [--round N | --best] [--node LABEL]... [--out model.safetensors]
    fedweave export RUN_DIR --per-client DIR     one CSV per client (or node) of the records
    fedweave.load_model(RUN_DIR, round=None, best=False, node=None) -> nn.Module

Every exported model carries its input preprocessing (``fedweave.preprocessing``: the /255
scale, the per-channel mean/std, the input shape, the class names): in the safetensors
metadata under ``preprocessing`` (JSON; ``read_preprocessing(path)``) and as
``load_model(...).preprocess``, so ``model(model.preprocess(raw_uint8_images))`` predicts as
the run evaluated.
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from fedweave.config import Config
from fedweave.core.population import ParamLayout
from fedweave.errors import UserError
from fedweave.models import build_model
from fedweave.plugins import load_config
from fedweave.preprocessing import Preprocessing, preprocessing
from fedweave.records.checkpoints import Checkpoints
from fedweave.records.files import field, read_json


@dataclass
class Exported:
    """The models of one checkpoint: ``state_dicts[label]`` and how they were chosen."""

    config: Config
    round: int
    state_dicts: dict[str, dict[str, torch.Tensor]]
    input_shape: tuple[int, ...]
    num_classes: int
    preprocessing: Preprocessing


def _model_facts(run_dir: Path, config: Config) -> dict[str, Any]:
    facts = run_dir / "model.json"
    if facts.is_file():
        try:
            data = json.loads(facts.read_text())
            out = {"input_shape": tuple(int(s) for s in data["input_shape"]),
                   "num_classes": int(data["num_classes"]),
                   "labels": [str(x) for x in data.get("labels", [])]}
            if data.get("preprocessing") is not None:
                out["preprocessing"] = Preprocessing.from_json(data["preprocessing"])
                return out
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{facts} is damaged; delete it to rebuild it from the data") \
                from None
    else:
        out = {}
    from fedweave.data.federated import build_federated_data  # older runs: from the data

    data = build_federated_data(config.data, config.seed)
    return {"input_shape": data.input_shape, "num_classes": data.num_classes, "labels": [],
            **out, "preprocessing": Preprocessing.from_json(preprocessing(data))}


def _best_round(run_dir: Path, ckpts: Checkpoints) -> int:
    summary = run_dir / "summary.json"
    best: dict[str, Any] = {}
    if summary.is_file():
        found = read_json(summary, "restore it, or name the round with --round N").get("best",
                                                                                      {})
        best = found if isinstance(found, dict) else {}
    else:
        newest = ckpts.load()
        if newest is not None:
            best = newest[2].get("best", {})
    if "round" not in best:
        raise UserError(f"{run_dir}: no best round recorded yet (no evaluated round)")
    return int(field(best, "round", int, summary, "restore it, or name the round with --round "
                     "N"))


def _models(flat: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``params[M, P]`` and stacked buffers ``{name: [M, ...]}`` of a checkpoint."""
    buffers = {k.split("/", 1)[1]: v for k, v in flat.items() if k.startswith("buffers/")}
    if "server/x" in flat:
        return flat["server/x"].unsqueeze(0), {k: v.unsqueeze(0) for k, v in buffers.items()}
    if "x" in flat and flat["x"].dim() == 2:
        return flat["x"], buffers
    raise UserError("this checkpoint holds no model under server/x or x (an algorithm whose "
                    "state fedweave export does not know); load its tensors with "
                    "safetensors.torch.load_file")


def exported(run_dir: str | Path, round: int | None = None, best: bool = False,
             nodes: list[str] | None = None) -> Exported:
    """The state_dicts of the models of a checkpoint: the newest, ``round``'s, or the best
    by validation accuracy; all evaluated models, or those labelled ``nodes``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.yaml)")
    if round is not None and best:
        raise UserError("give --round N or --best, not both")
    config = load_config(run_dir / "config.yaml")
    ckpts = Checkpoints(run_dir / "checkpoints")
    if best:
        round = _best_round(run_dir, ckpts)
        if round not in ckpts.rounds():
            raise UserError(f"{run_dir}: the best round ({round}) has no checkpoint (kept: "
                            f"{ckpts.rounds() or 'none'}); runs keep it with output.keep: best")
    if round is None:
        newest = ckpts.load()
        if newest is None:
            raise UserError(f"{run_dir}: no checkpoint yet (output.checkpoint_every: 0, or "
                            "killed before its first round)")
        round, flat = newest[0], newest[1]
    else:
        flat, _ = ckpts.load_round(round)
    facts = _model_facts(run_dir, config)
    module = build_model(config.model, facts["input_shape"], facts["num_classes"])
    layout = ParamLayout.of(module)
    params, buffers = _models(flat)
    if params.shape[-1] != layout.total:
        raise UserError(f"{run_dir}: the checkpoint's models have {params.shape[-1]} "
                        f"parameters, the config's model.{config.model.name} {layout.total}")
    labels = facts["labels"] if len(facts["labels"]) == len(params) else \
        (["global"] if len(params) == 1 else [str(i) for i in range(len(params))])
    chosen = nodes or labels
    unknown = [n for n in chosen if n not in labels]
    if unknown:
        raise UserError(f"--node {unknown[0]}: no such model; this run has "
                        f"{', '.join(labels[:20])}{' ...' if len(labels) > 20 else ''}")
    out = {}
    for label in chosen:
        m = labels.index(label)
        state = {k: v.clone() for k, v in layout.views(params[m]).items()}
        state.update({k: v[m].clone() for k, v in buffers.items()})
        out[label] = state
    return Exported(config, round, out, tuple(facts["input_shape"]), facts["num_classes"],
                    facts["preprocessing"])


def _module(ex: Exported, label: str) -> nn.Module:
    module = build_model(ex.config.model, ex.input_shape, ex.num_classes)
    missing, unexpected = module.load_state_dict(ex.state_dicts[label], strict=True)
    assert not missing and not unexpected
    return module.eval()


def load_model(run_dir: str | Path, round: int | None = None, best: bool = False,
               node: str | None = None) -> nn.Module:
    """The trained ``nn.Module`` of a run (eval mode): the global model, or ``node`` (a
    decentralized peer ``"3"``, a cluster ``"cluster1"``; default the first model) of the
    newest checkpoint, of ``round``, or of the best round by validation accuracy.

    ``module.preprocess`` (a ``fedweave.preprocessing.Preprocessing``) maps raw inputs (uint8
    images ``[N, C, H, W]`` or ``[N, H, W, C]``) to what the model was trained on:
    ``module(module.preprocess(images)).argmax(1)`` are the predicted classes
    (``module.preprocess.classes`` names them when the data set does)."""
    ex = exported(run_dir, round, best, [node] if node is not None else None)
    module = _module(ex, next(iter(ex.state_dicts)))
    module.preprocess = ex.preprocessing  # type: ignore[assignment]
    return module


def read_preprocessing(path: str | Path) -> Preprocessing:
    """The preprocessing stored in an exported safetensors file's metadata."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "preprocessing" not in meta:
        raise UserError(f"{path}: no preprocessing in its metadata (exported by an older "
                        "fedweave; export the run again)")
    return Preprocessing.from_json(json.loads(meta["preprocessing"]))


def write_export(run_dir: str | Path, out: Path, round: int | None = None, best: bool = False,
                 nodes: list[str] | None = None) -> list[Path]:
    """Write each chosen model's state_dict as safetensors: ``out`` for one model,
    ``<stem>-<label><suffix>`` for several. The file's metadata names the run, round, model
    config, input shape and classes, and holds the input preprocessing (``preprocessing``:
    JSON, ``read_preprocessing``)."""
    ex = exported(run_dir, round, best, nodes)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for label, state in ex.state_dicts.items():
        path = out if len(ex.state_dicts) == 1 else \
            out.with_name(f"{out.stem}-{label}{out.suffix or '.safetensors'}")
        meta = {"format": "pytorch state_dict", "run": Path(run_dir).name,
                "round": str(ex.round), "model_label": label,
                "model": json.dumps(ex.config.model.model_dump(mode="json")),
                "input_shape": json.dumps(list(ex.input_shape)),
                "num_classes": str(ex.num_classes),
                "preprocessing": json.dumps(ex.preprocessing.to_json())}
        save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=meta)
        paths.append(path)
    return paths


def write_per_client(run_dir: str | Path, out_dir: Path) -> list[Path]:
    """One CSV per client in ``out_dir`` (``<client>.csv``, reference system 001's columns
    epoch,train_loss,val_loss,test_loss,train_acc,val_acc,test_acc; test_* empty: clients
    have no test split of their own), split from the run's one ``clients.csv`` in one pass;
    for a run without clients.csv (decentralized: already one file per node) the
    ``nodes/<node>.csv`` files are copied."""
    from fedweave.records.rundir import NODE_COLUMNS

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise UserError(f"{run_dir}: not a run directory (no config.yaml)")
    table = run_dir / "clients.csv"
    nodes = sorted((run_dir / "nodes").glob("*.csv")) if (run_dir / "nodes").is_dir() else []
    if not table.is_file() and not nodes:
        raise UserError(f"{run_dir}: no per-client records (no clients.csv, no nodes/*.csv)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not table.is_file():
        for path in nodes:
            shutil.copyfile(path, out_dir / path.name)
        return [out_dir / p.name for p in nodes]
    rows: dict[str, list[list[str]]] = {}
    try:
        with open(table, newline="") as f:
            for row in csv.DictReader(f):
                client = str(int(row["client"]))  # a file name of digits only
                rows.setdefault(client, []).append(
                    [row["round"] if c == "epoch" else row.get(c) or "" for c in NODE_COLUMNS])
    except (OSError, ValueError, KeyError, TypeError, csv.Error) as exc:
        raise UserError(f"{table} is damaged ({type(exc).__name__}); nothing was "
                        "written") from None
    paths = []
    for client in sorted(rows, key=int):
        path = out_dir / f"{client}.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(NODE_COLUMNS)
            w.writerows(rows[client])
        paths.append(path)
    return paths
