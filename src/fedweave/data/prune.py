"""Per-node data pruning by scores (``data.prune``; stage 2 of ``fedweave prune``).

Every scorer writes one orientation, **higher = more helpful to keep** (``scores.csv``), so the
side kept follows from it: ``keep: top`` keeps the highest scores (the default: what the
scores recommend), ``keep: lowest`` the lowest (what reference system 000 does for every
method). Ties are broken by the lower global index.

How many samples node i keeps, K_i = ⌈ratio · n_i⌉ (at least 1), is the same in both modes of
``balance``:

- ``class`` (default): the ratio holds within each class of the node (its training labels,
  flipped ones included). Class c's quota ratio · n_ic is rounded by largest remainder
  (Hamilton's method): every class keeps ⌊ratio · n_ic⌋ or ⌈ratio · n_ic⌉ samples, the classes
  with the largest fractional parts (then the larger class, then the lower label) take the
  rounding up, and the quotas sum to K_i exactly. Within a class the highest (or lowest)
  scores are kept. A class only disappears from a node when ratio · n_ic < 1.
- ``none``: the K_i highest (or lowest) scores of the node, whatever their class — a scorer
  that ranks one class low removes it from the node.

Either way a node that keeps no sample of a class it had is named in one warning line. The
kept samples stay in shard order, so the batch schedule of a kept shard is the one of the
unpruned run when the ratio is 1 (same seeds, same shuffling: bit-identical).
"""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

import torch

from fedweave.config import PruneConfig
from fedweave.errors import UserError

log = logging.getLogger("fedweave")
#: warnings already given in this process (stage 2 and its summary build the data twice)
_WARNED: set[tuple[str, str]] = set()


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


def class_quotas(counts: torch.Tensor, ratio: float) -> torch.Tensor:
    """Samples kept per class: largest-remainder rounding of ``ratio · counts`` to a total of
    ``kept_count(Σ counts, ratio)`` (ties: the larger class, then the lower label)."""
    n = int(counts.sum())
    exact = [ratio * int(c) for c in counts]
    quota = [min(int(c), math.floor(q + 1e-9)) for q, c in zip(exact, counts, strict=True)]
    rest = kept_count(n, ratio) - sum(quota) if n else 0
    order = sorted(range(len(quota)), key=lambda c: (-(exact[c] - quota[c]), -int(counts[c]), c))
    while rest > 0:
        for c in order:
            if rest > 0 and quota[c] < int(counts[c]):
                quota[c] += 1
                rest -= 1
    return torch.tensor(quota, dtype=torch.int64)


def ranked(score: torch.Tensor, keep: str) -> torch.Tensor:
    """Positions by preference: highest (``top``) or lowest score first, ties in shard order."""
    sign = -1.0 if keep == "top" else 1.0
    return torch.sort(sign * score, stable=True).indices


def select(score: torch.Tensor, labels: torch.Tensor | None, cfg: PruneConfig) -> torch.Tensor:
    """Positions (sorted) of the samples one node keeps."""
    order = ranked(score, cfg.keep)
    if cfg.balance == "none" or labels is None:
        return order[:kept_count(len(score), cfg.ratio)].sort().values
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    quota = class_quotas(counts, cfg.ratio)
    kept = []
    for c in range(len(classes)):
        mine = order[inverse[order] == c]  # this class's positions, best first
        kept.append(mine[:int(quota[c])])
    return torch.cat(kept).sort().values


def prune_shards(train_idx: list[torch.Tensor], cfg: PruneConfig,
                 labels: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Each node's kept training indices (shard order) by ``cfg``'s scores, ratio and balance;
    ``labels`` are the training labels by global index (needed by ``balance: class``)."""
    if cfg.scores is None:
        return train_idx
    table = read_scores(Path(cfg.scores))
    out, lost = [], []
    for node, shard in enumerate(train_idx):
        rows = [table.get(int(i)) for i in shard]
        missing = [int(i) for i, r in zip(shard, rows, strict=True) if r is None or r[0] != node]
        if missing:
            raise UserError(
                f"data.prune.scores: {cfg.scores} has no score for {len(missing)} training "
                f"sample(s) of node {node} (e.g. index {missing[0]}): it was written for "
                "another data partition; score a run of this config")
        score = torch.tensor([r[1] for r in rows if r is not None], dtype=torch.float64)
        mine = labels[shard].cpu() if labels is not None else None
        keep = select(score, mine, cfg)
        out.append(shard[keep])
        if mine is not None:
            gone = sorted(set(mine.tolist()) - set(mine[keep].tolist()))
            if gone:
                lost.append(f"node {node} loses class {', '.join(map(str, gone))}")
    message = f"data.prune: {'; '.join(lost)} (keeping {cfg.ratio:g}, balance {cfg.balance})"
    if lost and (str(cfg.scores), message) not in _WARNED:
        _WARNED.add((str(cfg.scores), message))
        log.warning(message)
    return out
