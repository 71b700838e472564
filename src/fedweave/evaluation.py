"""Per-client evaluation of federated runs: the model each client would use (the global model,
or its cluster's) on that client's own validation split, for the chosen clients at once.

All clients' validation indices are concatenated into one index tensor; each model evaluates
the samples of its clients in a few large batches (one gather ``x[idx]`` each), and per-sample
losses and hits are summed per client with ``index_add_`` — no Python loop over clients, so
1,000 clients cost one pass over the union of their validation splits.

    loss_i = (1/|V_i|) Σ_{s∈V_i} CE(f(x_s; θ_{m(i)}), y_s),   acc_i = (1/|V_i|) Σ 1[argmax = y_s]

Clients without validation samples get NaN (they are left out of the spread statistics).
Which clients are evaluated is ``output.client_eval`` (the runner passes the cohort, or
every client).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch.func import functional_call

if TYPE_CHECKING:
    from fedweave.context import RunContext
    from fedweave.core.population import Buffers


class ClientModels(Protocol):
    """What per-client evaluation reads of an algorithm (``fedweave.algorithms.base.Algorithm``
    is one): its context, its models and which model each client uses."""

    @property
    def ctx(self) -> RunContext: ...

    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]: ...

    def client_models(self) -> torch.Tensor | None: ...

BATCH = 2048  # samples per forward pass


@torch.no_grad()
def client_validation(algo: ClientModels, clients: torch.Tensor | None = None
                      ) -> dict[str, torch.Tensor] | None:
    """``{"client", "loss", "acc", "count"}`` of ``clients`` (sorted ids; default every client)
    ``[C]`` (float64 loss/acc, CPU), or None when the run has no clients or none of the chosen
    clients has validation samples. Only the chosen clients' samples are touched: the cost
    is their validation splits, whatever the population."""
    index = algo.client_models()
    data = algo.ctx.data
    if index is None or data.nodes < 2:
        return None
    chosen = torch.arange(data.nodes) if clients is None else clients.cpu().long()
    parts = [data.val_idx[c] for c in chosen.tolist()]
    counts = torch.tensor([len(v) for v in parts], dtype=torch.int64)
    if int(counts.sum()) == 0:
        return None
    idx = torch.cat([v.cpu() for v in parts])
    owner = torch.repeat_interleave(torch.arange(len(chosen)), counts)
    model_of = index.cpu()[chosen][owner]
    params, buffers, _ = algo.models()
    module, layout = algo.ctx.model, algo.ctx.layout
    loss = torch.zeros(len(idx), dtype=torch.float64)
    hits = torch.zeros(len(idx), dtype=torch.float64)
    was = module.training
    module.eval()
    try:
        for m in model_of.unique().tolist():
            views = layout.views(params[m])
            bufs = {k: v[m] for k, v in buffers.items()}
            for part in (model_of == m).nonzero().squeeze(1).split(BATCH):
                x, y = data.take(idx[part])
                logits = functional_call(module, (views, bufs), (data.features(x),))
                loss[part] = F.cross_entropy(logits, y, reduction="none").double().cpu()
                hits[part] = (logits.argmax(1) == y).double().cpu()
    finally:
        module.train(was)
    n = counts.double()
    per_loss = torch.zeros(len(chosen), dtype=torch.float64).index_add_(0, owner, loss) / n
    per_acc = torch.zeros(len(chosen), dtype=torch.float64).index_add_(0, owner, hits) / n
    return {"client": chosen, "loss": per_loss, "acc": per_acc, "count": counts}


def spread(values: torch.Tensor) -> dict[str, float]:
    """Mean, min, max and population standard deviation over the finite entries."""
    v = values[torch.isfinite(values)]
    if len(v) == 0:
        return {}
    return {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "std": float(v.std(correction=0))}
