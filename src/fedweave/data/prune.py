"""Per-node data pruning by scores (``data.prune``; stage 2 of ``fedweave prune``).

Node i keeps the ⌈ratio · n_i⌉ samples of its training shard with the highest score
(``keep: top``; "higher = more helpful" in every fedweave scorer) or the lowest (``keep:
lowest``, what reference system 000 does for every method), ties broken by the lower global
index, and keeps them in shard order, so the batch schedule of a kept shard is the one of the
unpruned run when the ratio is 1 (same seeds, same shuffling: bit-identical).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from fedweave.config import PruneConfig
from fedweave.errors import UserError


def read_scores(path: Path) -> dict[int, tuple[int, float]]:
    """``{global index: (node, score)}`` from a scores.csv (``node,index,score``)."""
    if not path.is_file():
        raise UserError(f"data.prune.scores: {path} not found (write one with fedweave "
                        "influence RUN_DIR --scorer NAME)")
    out: dict[int, tuple[int, float]] = {}
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"node", "index", "score"} <= set(
                    reader.fieldnames):
                raise UserError(f"data.prune.scores: {path} needs the columns node,index,score")
            for row in reader:
                out[int(row["index"])] = (int(row["node"]), float(row["score"]))
    except (ValueError, csv.Error, UnicodeDecodeError) as exc:
        raise UserError(f"data.prune.scores: {path} is not a scores.csv ({exc})") from None
    return out


def kept_count(n: int, ratio: float) -> int:
    return min(n, max(1, math.ceil(ratio * n - 1e-9)))


def prune_shards(train_idx: list[torch.Tensor], cfg: PruneConfig) -> list[torch.Tensor]:
    """Each node's kept training indices (shard order) by ``cfg``'s scores and ratio."""
    if cfg.scores is None:
        return train_idx
    table = read_scores(Path(cfg.scores))
    out = []
    for node, shard in enumerate(train_idx):
        rows = [table.get(int(i)) for i in shard]
        missing = [int(i) for i, r in zip(shard, rows, strict=True) if r is None or r[0] != node]
        if missing:
            raise UserError(
                f"data.prune.scores: {cfg.scores} has no score for {len(missing)} training "
                f"sample(s) of node {node} (e.g. index {missing[0]}): it was written for "
                "another data partition; score a run of this config")
        score = torch.tensor([r[1] for r in rows if r is not None], dtype=torch.float64)
        sign = -1.0 if cfg.keep == "top" else 1.0
        # stable sort on (sign·score) with shard order (ascending index) as the tie-break
        order = torch.sort(sign * score, stable=True).indices
        keep = order[:kept_count(len(shard), cfg.ratio)].sort().values
        out.append(shard[keep])
    return out
