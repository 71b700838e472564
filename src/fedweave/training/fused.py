"""The fused engine: stacks of Linear/ReLU models (logistic regression, MLPs) computed as
batched matrix products, whole local rounds on per-layer contiguous parameter stacks.

For K node models of a ``Flatten → (Linear → ReLU)* → Linear`` network and one batch per node
(x[K, B, D], labels y[K, B], sample weights w[K, B]: 1 real, 0 padding) one step is

    a_0 = x;  z_l = a_{l−1} W_lᵀ + b_l  (``torch.baddbmm``),  a_l = relu(z_l)   (l < L)
    L_k = Σ_b w_kb CE(z_L[k, b], y_kb) / max(Σ_b w_kb, 1)
    δ_L = (softmax(z_L) − onehot(y)) · w / max(Σ w, 1)
    ∇W_l = δ_lᵀ a_{l−1} (``torch.bmm``),  ∇b_l = Σ_b δ_l,  δ_{l−1} = (δ_l W_l) ⊙ [z_{l−1} > 0]

— the same gradients as autograd of the mean cross-entropy (the loop engine), in a different
float summation order. ``train_round`` keeps the cohort's parameters during a local round as one
contiguous ``[K, out, in]`` tensor per layer (copied from and back to the ``[K, P]`` rows once
per round), writes gradients into preallocated per-layer buffers and updates in place; with
plain SGD and every row active the update is fused into the gradient product
(``W.baddbmm_(δᵀ, a, alpha=−lr)``), so a step makes about three passes over the K·P weights
instead of the vectorized engine's seven. Rows of the stack never mix: a row's numbers do not
depend on which other rows share the stack (tested).

Supported: the cross-entropy data term, the parameter terms of ``training.objectives`` (L2,
FedProx's proximal term, SCAFFOLD's linear correction) and masks, every optimizer of
``training.optim``. Anything else (other data terms, dropout, other layers) is not eligible:
``training.select`` then uses the vectorized or loop engine.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fedweave.config import TrainConfig
from fedweave.core.population import Buffers, ParamLayout
from fedweave.data.federated import FederatedData
from fedweave.training.chunks import chunks, pad_rows
from fedweave.training.objectives import CROSS_ENTROPY, L2, DataLoss, Linear, Objective, Proximal
from fedweave.training.optim import FunctionalOptimizer
from fedweave.training.persample import PerSample
from fedweave.training.protocol import Batches, LocalResult, StepOutput
from fedweave.training.vectorized import VectorizedEngine
from fedweave.training.workers import run_all


def linear_stack(model: nn.Module) -> list[tuple[str, str | None]] | None:
    """``[(weight name, bias name), ...]`` of a ``Flatten → (Linear → ReLU)* → Linear``
    ``nn.Sequential`` (no dropout, no other modules), else None."""
    if not isinstance(model, nn.Sequential):
        return None
    mods = list(model.named_children())
    if mods and isinstance(mods[0][1], nn.Flatten):
        mods = mods[1:]
    out: list[tuple[str, str | None]] = []
    for i, (name, mod) in enumerate(mods):
        want_linear = i % 2 == 0
        if want_linear and isinstance(mod, nn.Linear):
            out.append((f"{name}.weight", f"{name}.bias" if mod.bias is not None else None))
        elif not want_linear and isinstance(mod, nn.ReLU) and i < len(mods) - 1:
            continue
        else:
            return None
    return out if mods and len(mods) % 2 == 1 else None


class FusedEngine(PerSample):
    """Batched-matmul gradients for Linear/ReLU stacks (module docstring); the gradient-engine
    protocol plus ``train_round``, the whole local round on per-layer stacks."""

    name = "fused"
    calibration: dict[str, Any] | None = None

    def __init__(self, model: nn.Module, layout: ParamLayout, data: FederatedData,
                 seed: int, eval_batch: int = 4096, chunk: int = 8) -> None:
        layers = linear_stack(model)
        if layers is None:
            raise ValueError("the fused engine needs a Flatten → (Linear → ReLU)* → Linear model")
        self.model, self.layout, self.data, self.seed = model, layout, data, seed
        self.eval_batch = eval_batch
        self.chunk = chunk
        self._vectorized: VectorizedEngine | None = None
        shapes = dict(zip(layout.names, layout.shapes, strict=True))
        offsets = dict(zip(layout.names, layout.offsets, strict=True))
        #: per layer: (weight slice, weight shape, bias slice or None)
        self.layers: list[tuple[slice, tuple[int, int], slice | None]] = []
        for w, b in layers:
            out_f, in_f = shapes[w]
            ws = slice(offsets[w], offsets[w] + out_f * in_f)
            bs = slice(offsets[b], offsets[b] + out_f) if b is not None else None
            self.layers.append((ws, (out_f, in_f), bs))

    def _generic(self) -> VectorizedEngine:
        """A plugin's own data loss is differentiated by ``vmap(grad)`` on the same chunks (the
        closed-form backward here is cross-entropy's)."""
        if self._vectorized is None:
            self._vectorized = VectorizedEngine(self.model, self.layout, self.data, self.seed,
                                                chunk=self.chunk)
        return self._vectorized

    # ------------------------------------------------------------------ core step
    def _inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.gather(idx)
        return x.reshape(*idx.shape, -1), y

    def _forward(self, ws: list[torch.Tensor], bs: list[torch.Tensor | None], x: torch.Tensor
                 ) -> list[torch.Tensor]:
        """Pre-activations z_l of every layer (a_l = relu(z_l) is recomputed in backward)."""
        zs, a = [], x
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            z = (torch.baddbmm(b.unsqueeze(1), a, w.transpose(1, 2)) if b is not None
                 else torch.bmm(a, w.transpose(1, 2)))
            zs.append(z)
            a = z.relu() if i < len(ws) - 1 else z
        return zs

    def _loss_grad(self, z: torch.Tensor, y: torch.Tensor, w: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(δ_L, mean loss [K], correct [K]) of the weighted cross-entropy."""
        denom = w.sum(1).clamp(min=1)
        logp = F.log_softmax(z, -1)
        nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
        loss = (nll * w).sum(1) / denom
        correct = ((z.argmax(-1) == y).to(w.dtype) * w).sum(1)
        delta = logp.exp_()
        delta.scatter_add_(-1, y.unsqueeze(-1), -torch.ones_like(y, dtype=z.dtype).unsqueeze(-1))
        delta.mul_((w / denom.unsqueeze(1)).unsqueeze(-1))
        return delta, loss, correct

    def _backward(self, ws: list[torch.Tensor], x: torch.Tensor, zs: list[torch.Tensor],
                  delta: torch.Tensor, gws: list[torch.Tensor], gbs: list[torch.Tensor | None],
                  fused_lr: float | None = None, bs: list[torch.Tensor | None] | None = None
                  ) -> None:
        """Gradients into ``gws``/``gbs`` (or, with ``fused_lr``, SGD applied to ``ws``/``bs``
        in place, no gradient buffers)."""
        for i in range(len(ws) - 1, -1, -1):
            a_prev = x if i == 0 else zs[i - 1].relu()
            d_prev = None
            if i > 0:
                d_prev = torch.bmm(delta, ws[i]).mul_(zs[i - 1] > 0)
            if fused_lr is None:
                torch.bmm(delta.transpose(1, 2), a_prev, out=gws[i])
                gb = gbs[i]
                if gb is not None:
                    torch.sum(delta, 1, out=gb)
            else:
                ws[i].baddbmm_(delta.transpose(1, 2), a_prev, alpha=-fused_lr)
                b = bs[i] if bs is not None else None
                if b is not None:
                    b.sub_(delta.sum(1), alpha=fused_lr)
            if d_prev is not None:
                delta = d_prev

    # ------------------------------------------------------------------ protocol
    def _chunked(self, ws: list[torch.Tensor], bs: list[torch.Tensor | None],
                 x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, gws: list[torch.Tensor],
                 gbs: list[torch.Tensor | None], fused_lr: float | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step over a padded stack (rows a multiple of ``chunk``), one chunk of exactly
        ``chunk`` rows per kernel call; returns (mean loss, correct) per row."""
        k = x.shape[0]
        loss = torch.empty(k, dtype=w.dtype, device=w.device)
        correct = torch.empty_like(loss)

        def one(sl: slice) -> None:  # writes only its rows: chunks run on the workers
            wc = [t[sl] for t in ws]
            bc = [t[sl] if t is not None else None for t in bs]
            zs = self._forward(wc, bc, x[sl])
            delta, loss[sl], correct[sl] = self._loss_grad(zs[-1], y[sl], w[sl])
            self._backward(wc, x[sl], zs, delta, [t[sl] for t in gws],
                           [t[sl] if t is not None else None for t in gbs], fused_lr, bc)

        run_all(one, chunks(k, self.chunk))
        return loss, correct

    def _stacks(self, params: torch.Tensor, k_pad: int
                ) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        """Contiguous per-layer copies ``[k_pad, out, in]`` / ``[k_pad, out]`` of the rows."""
        k = params.shape[0]

        def stack(cols: slice, shape: tuple[int, ...]) -> torch.Tensor:
            # one copy per layer, straight from the (possibly expanded) rows; padding rows
            # are copies of row 0, as ``pad_rows`` makes them
            out = params.new_empty(k_pad, *shape)
            out[:k] = params[:, cols].reshape(k, *shape)
            if k_pad > k:
                out[k:] = out[:1]
            return out

        ws = [stack(s, shape) for s, shape, _ in self.layers]
        bs = [stack(s, (s.stop - s.start,)) if s is not None else None
              for _, _, s in self.layers]
        return ws, bs

    def grads(self, params: torch.Tensor, buffers: Buffers, idx: torch.Tensor,
              weight: torch.Tensor, active: torch.Tensor, key: tuple[int, ...],
              nodes: torch.Tensor, loss: DataLoss | None = None) -> StepOutput:
        if loss is not None and not isinstance(loss, type(CROSS_ENTROPY)):
            return self._generic().grads(params, buffers, idx, weight, active, key, nodes, loss)
        k = params.shape[0]
        if params.device.type == "cpu" and not bool(active.all()):
            # on a CPU skip the chunks without an active row (a peer stepping alone computes
            # its own chunk, not every node's): the kept chunks keep their rows together
            c = self.chunk
            live = [slice(s, min(k, s + c)) for s in  # one pass, not one test per chunk
                    (torch.nonzero(active).flatten() // c * c).unique().tolist()]
            if len(live) < -(-k // self.chunk):
                return self._chunks_only(live, params, buffers, idx, weight, active, key,
                                         nodes)
        k_pad = -(-k // self.chunk) * self.chunk
        if k_pad == k:  # read the rows in place: strided views are fine for the products
            ws = [params[:, s].view(k, *shape) for s, shape, _ in self.layers]
            bs: list[torch.Tensor | None] = [params[:, s] if s is not None else None
                                             for _, _, s in self.layers]
        else:
            ws, bs = self._stacks(params, k_pad)
        # gradient products need contiguous outputs (a strided ``out`` is many times slower)
        gws = [torch.empty(k_pad, *shape, dtype=params.dtype, device=params.device)
               for _, shape, _ in self.layers]
        gbs = [torch.empty(k_pad, s.stop - s.start, dtype=params.dtype, device=params.device)
               if s is not None else None for _, _, s in self.layers]
        x, y = self._inputs(pad_rows(idx, k_pad))
        w = pad_rows(weight.to(params.dtype), k_pad, 0.0)
        loss_k, correct = self._chunked(ws, bs, x, y, w, gws, gbs)
        grads = torch.empty_like(params)
        for (s, _, sb), gw, gb in zip(self.layers, gws, gbs, strict=True):
            grads[:, s] = gw[:k].reshape(k, -1)
            if sb is not None and gb is not None:
                grads[:, sb] = gb[:k]
        act = active.to(params.dtype)
        if not bool(active.all()):
            grads.mul_(act[:, None])
        return StepOutput(grads, loss_k[:k] * act, correct[:k] * act, weight.sum(1).to(
            params.dtype), buffers)

    def _chunks_only(self, live: list[slice], params: torch.Tensor, buffers: Buffers,
                     idx: torch.Tensor, weight: torch.Tensor, active: torch.Tensor,
                     key: tuple[int, ...], nodes: torch.Tensor) -> StepOutput:
        """``grads`` of the rows of the ``live`` chunks only; zeros elsewhere."""
        count = weight.sum(1).to(params.dtype)
        grads = torch.zeros_like(params)
        loss = torch.zeros(params.shape[0], dtype=params.dtype, device=params.device)
        correct = torch.zeros_like(loss)
        if live:
            rows = torch.cat([torch.arange(sl.start, sl.stop) for sl in live]).to(params.device)
            out = self.grads(params[rows], buffers, idx[rows], weight[rows], active[rows], key,
                             nodes[rows])
            grads[rows], loss[rows], correct[rows] = out.grads, out.loss, out.correct
        return StepOutput(grads, loss, correct, count, buffers)

    @torch.no_grad()
    def evaluate_sums(self, params: torch.Tensor, buffers: Buffers, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ cross-entropy and Σ correct (float64) per model, batch by batch in order: one
        model alone, several in chunks of exactly ``chunk`` models."""
        m = params.shape[0]
        c = 1 if m == 1 else self.chunk
        m_pad = -(-m // c) * c
        ws, bs = self._stacks(params, m_pad)

        def batch(start: int) -> tuple[torch.Tensor, torch.Tensor]:
            loss = torch.zeros(m_pad, dtype=torch.float64, device=params.device)
            correct = torch.zeros(m_pad, dtype=torch.float64, device=params.device)
            flat = self.data.features(x[start: start + self.eval_batch]).flatten(1)
            yb = y[start: start + self.eval_batch]
            for sl in chunks(m_pad, c):
                a = flat.unsqueeze(0).expand(c, -1, -1)
                z = self._forward([t[sl] for t in ws],
                                  [t[sl] if t is not None else None for t in bs], a)[-1]
                loss[sl] = F.cross_entropy(z.flatten(0, 1), yb.repeat(c), reduction="none"
                                           ).view(c, -1).sum(1).double()
                correct[sl] = (z.argmax(-1) == yb).sum(1).double()
            return loss, correct

        # batches on the workers, their sums added in batch order (as one thread would)
        loss = torch.zeros(m_pad, dtype=torch.float64, device=params.device)
        correct = torch.zeros(m_pad, dtype=torch.float64, device=params.device)
        for part_loss, part_correct in run_all(batch, range(0, len(y), self.eval_batch)):
            loss += part_loss
            correct += part_correct
        return loss[:m], correct[:m]

    # ------------------------------------------------------------------ whole rounds
    def supports(self, objective: Objective) -> bool:
        """Cross-entropy with the built-in parameter terms (their tensors are sliced per
        layer); anything else trains through the generic step."""
        return isinstance(objective.data, type(CROSS_ENTROPY)) and all(
            type(t) in (L2, Proximal, Linear) for t in objective.terms)

    def train_round(self, cfg: TrainConfig, optimizer: FunctionalOptimizer,
                    nodes: torch.Tensor, params: torch.Tensor, buffers: Buffers,
                    batches: Batches, lr: float, objective: Objective) -> LocalResult:
        """``LocalTrainer.train`` for this engine: the trainer's batches, objective and
        optimizer, with the parameters held per layer for the whole round (module
        docstring)."""
        data = self.data
        k = len(nodes)
        sizes = data.sizes[nodes.cpu()]
        steps = batches.steps
        dev, dtype = params.device, params.dtype
        # per layer: contiguous parameter stacks (rows padded to whole chunks), gradient
        # buffers, optimizer states
        k_pad = -(-k // self.chunk) * self.chunk
        ws, bs = self._stacks(params, k_pad)
        gws = [torch.empty_like(w) for w in ws]
        gbs = [torch.empty_like(b) if b is not None else None for b in bs]
        pieces = [(w, g, s) for w, g, (s, _, _) in zip(ws, gws, self.layers, strict=True)]
        pieces += [(b, g, s) for b, g, (_, _, s) in zip(bs, gbs, self.layers, strict=True)
                   if b is not None and g is not None and s is not None]
        states = [optimizer.init(p.view(k_pad, -1)) for p, _, _ in pieces]
        terms = tuple(_padded(t, k, k_pad) for t in objective.terms)
        mask_all = None if objective.mask is None else _padded_rows(objective.mask, k, k_pad)
        plain = (not terms and objective.mask is None and cfg.optimizer == "sgd"
                 and cfg.momentum == 0 and cfg.weight_decay == 0)
        steps_dev = pad_rows(steps.to(dev), k_pad, 0)
        loss_sum = torch.zeros(k_pad, dtype=dtype, device=dev)
        correct = torch.zeros_like(loss_sum)
        seen = torch.zeros_like(loss_sum)
        idx_all = pad_rows(batches.idx, k_pad)
        weight_all = pad_rows(batches.weight.to(dtype), k_pad, 0.0)
        for s in range(batches.idx.shape[1]):
            active = steps_dev > s
            x, y = self._inputs(idx_all[:, s])
            w = weight_all[:, s]
            everyone = bool(active[:k].all())
            if plain and everyone:  # SGD applied inside the gradient products
                loss_k, corr = self._chunked(ws, bs, x, y, w, gws, gbs, fused_lr=lr)
            else:
                loss_k, corr = self._chunked(ws, bs, x, y, w, gws, gbs)
                for n_, (p, g, sl) in enumerate(pieces):
                    p2, g2 = p.view(k_pad, -1), g.view(k_pad, -1)
                    for term in terms:
                        _sliced(term, sl).add_grad(g2, p2)
                    mask = None if mask_all is None else _slice_cols(mask_all, sl)
                    optimizer.step(p2, g2, states[n_], lr, active, mask, inplace=True)
            act = active.to(dtype)
            count = w.sum(1)
            loss_sum += loss_k * count * act
            correct += corr * act
            seen += count * act
        out = torch.empty_like(params)
        for (sw, _, sb), w_, b_ in zip(self.layers, ws, bs, strict=True):
            out[:, sw] = w_[:k].reshape(k, -1)
            if sb is not None and b_ is not None:
                out[:, sb] = b_[:k]
        seen = seen[:k].clamp(min=1)
        return LocalResult(out, buffers, sizes.to(dtype).to(dev), steps, loss_sum[:k] / seen,
                           correct[:k] / seen)


def _padded_rows(t: torch.Tensor, k: int, k_pad: int) -> torch.Tensor:
    """Per-row tensors ``[k, ...]`` padded to ``k_pad`` rows; shared ones unchanged."""
    return pad_rows(t, k_pad) if t.dim() >= 2 and t.shape[0] == k and k_pad > k else t


def _padded(term: Any, k: int, k_pad: int) -> Any:
    from dataclasses import fields, replace

    updates = {f.name: _padded_rows(getattr(term, f.name), k, k_pad) for f in fields(term)
               if isinstance(getattr(term, f.name), torch.Tensor)}
    return replace(term, **updates)


def _slice_cols(t: torch.Tensor, sl: slice) -> torch.Tensor:
    return t[..., sl]


def _sliced(term: Any, sl: slice) -> Any:
    """A parameter term restricted to the columns ``sl`` of the flat vector."""
    from dataclasses import fields, replace

    updates = {f.name: _slice_cols(getattr(term, f.name), sl) for f in fields(term)
               if isinstance(getattr(term, f.name), torch.Tensor)}
    return replace(term, **updates)
