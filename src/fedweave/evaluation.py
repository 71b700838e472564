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

Personalised test (``personal_test``, with ``data.client_test_fraction``): every client's own
model θ_i (``Algorithm.personal_models``: the global model for a global method, the method's
per-client model for a personalised one; optionally after ``output.finetune_steps`` local
SGD steps on the client's training shard, as FL-bench and PFLlib evaluate FedAvg + FT) on
its own test split T_i, in chunks of ``PERSONAL_CHUNK`` clients (so 1,000+ clients never
hold their models at once), each chunk one ``vmap`` over its padded test batches:

    acc = Σ_i Σ_{s∈T_i} 1[argmax f(x_s; θ_i) = y_s] / Σ_i |T_i|   (sample-weighted mean),

with min, max and population std of the per-client accuracies acc_i beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

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

    def personal_models(self, clients: torch.Tensor) -> tuple[torch.Tensor, Buffers] | None: ...

BATCH = 2048  # samples per forward pass
PERSONAL_CHUNK = 256  # clients whose personal models are materialised together


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
                x, y = data.take_inputs(idx[part])
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


def finetune(ctx: RunContext, clients: torch.Tensor, params: torch.Tensor, buffers: Buffers,
             steps: int, key: int, lr: float | None = None) -> tuple[torch.Tensor, Buffers]:
    """``steps`` local SGD steps of every row of ``params[k, P]`` on its client's training
    shard (the run's optimizer and batch size; batches drawn as round ``key``); the rows are
    not modified."""
    from fedweave.training.trainer import LocalTrainer

    cfg = ctx.config.train.model_copy(update={"local_steps": steps, "epoch_samples": None})
    local = LocalTrainer(ctx.local_engine, ctx.data, cfg).train(
        clients.to(ctx.device), params, buffers, key, ctx.config.train.lr if lr is None else lr)
    return local.params.detach(), local.buffers


@torch.no_grad()
def _chunk_hits(ctx: RunContext, params: torch.Tensor, buffers: Buffers,
                parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Σ cross-entropy and Σ correct (float64 [k]) of row i of ``params`` on ``parts[i]``:
    the test batches padded to the longest and vmapped over the rows."""
    data, module, layout = ctx.data, ctx.model, ctx.layout
    k, width = len(parts), max(len(p) for p in parts)
    idx = torch.zeros(k, width, dtype=torch.int64)
    real = torch.zeros(k, width, dtype=torch.bool)
    for i, p in enumerate(parts):
        idx[i, :len(p)] = p.cpu()
        real[i, :len(p)] = True
    x, y = data.take_inputs(idx.reshape(-1))
    x = data.features(x).reshape(k, width, *x.shape[1:])
    y = y.reshape(k, width)

    def logits(p: torch.Tensor, b: Buffers, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(module, (layout.views(p), b), (xb,))

    was = module.training
    module.eval()
    try:
        out = vmap(logits)(params, buffers, x)  # [k, width, C]
    finally:
        module.train(was)
    mask = real.to(out.device)
    ce = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(k, width)
    hits = (out.argmax(-1) == y) & mask
    return (ce * mask).sum(1).double().cpu(), hits.sum(1).double().cpu()


def personal_test(algo: ClientModels, finetune_steps: int = 0, key: int = 0
                  ) -> dict[str, float] | None:
    """The personalised test (module docstring): ``{"acc", "acc_min", "acc_max", "acc_std",
    "loss"}`` over the clients with a personal test split, or None when the run has no
    personal test split or the algorithm no per-client models."""
    ctx = algo.ctx
    data = ctx.data
    if not data.test_idx or data.nodes < 2:
        return None
    counts = torch.tensor([len(t) for t in data.test_idx], dtype=torch.int64)
    clients = (counts > 0).nonzero().squeeze(1)
    if not len(clients) or algo.personal_models(clients[:1]) is None:
        return None
    loss = torch.zeros(len(clients), dtype=torch.float64)
    hits = torch.zeros(len(clients), dtype=torch.float64)
    for start in range(0, len(clients), PERSONAL_CHUNK):
        chunk = clients[start: start + PERSONAL_CHUNK]
        models = algo.personal_models(chunk)
        assert models is not None
        params, buffers = models
        if finetune_steps:
            params, buffers = finetune(ctx, chunk, params, buffers, finetune_steps, key)
        sl = slice(start, start + len(chunk))
        loss[sl], hits[sl] = _chunk_hits(ctx, params.detach(), buffers,
                                         [data.test_idx[int(c)] for c in chunk])
    n = counts[clients].double()
    acc = hits / n
    return {"acc": float(hits.sum() / n.sum()), "acc_min": float(acc.min()),
            "acc_max": float(acc.max()), "acc_std": float(acc.std(correction=0)),
            "loss": float(loss.sum() / n.sum())}
