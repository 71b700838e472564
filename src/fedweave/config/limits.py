"""Sizes a config asks for, checked against this machine before any data is loaded: a
``train.local_steps`` or ``train.epoch_samples`` whose batch schedule alone cannot fit is one
line naming the key, not an allocator error in the first round. (The sizes that need the data
or the model are checked where those are known: ``fedweave.data.sources.builtin`` for
synthetic data, ``fedweave.models.build_model`` for the model, ``fedweave.training.select``
for cohorts and chunks, ``fedweave.training.batches`` for every round's schedule.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedweave.memory import require_memory

if TYPE_CHECKING:
    from fedweave.config.root import Config

#: bytes per scheduled sample: its index (int64) and weight (float32), and the sample stream
#: it is cut from (int64, twice)
SCHEDULE_BYTES = 12 + 16


def check_limits(config: Config) -> None:
    """``UserError`` when one node's batch schedule of a round exceeds the memory available
    (a lower bound: one node, every sample of a step in the batch)."""
    t = config.train
    if t.local_steps is not None:
        samples = t.local_steps * t.batch_size
        what = f"train.local_steps={t.local_steps} × train.batch_size={t.batch_size}"
        fix = "lower train.local_steps"
    elif t.epoch_samples is not None:
        samples = int(t.local_epochs * t.epoch_samples)
        what = f"train.epoch_samples={t.epoch_samples} × train.local_epochs={t.local_epochs:g}"
        fix = "lower train.epoch_samples or train.local_epochs"
    else:
        return
    require_memory(samples * SCHEDULE_BYTES, f"{what} samples per node and round (the batch "
                   "schedule alone)", fix)
