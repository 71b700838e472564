"""``if_ekfac`` and ``if_exact``: influence functions (Koh & Liang, ICML 2017) on the final model,

    score(z) = ∇L_val(θ)ᵀ H⁻¹ (∇ℓ(z; θ) + λθ) / (n − 1),
    H = ∇²_θ (1/n) Σ_i ℓ_i + (λ + damping) I,

restricted to the parameters of chosen ``nn.Linear`` layers (``influence.layers``; default the
last one, as reference system 000), where λ = ``train.l2_lambda`` + ``train.weight_decay`` (the
run's own L2 term ½λ‖θ‖²). At the optimum of (1/n) Σ ℓ_i + ½λ‖θ‖², H⁻¹(∇ℓ(z) + λθ)/(n − 1) is
the Newton step to the optimum of the objective without z, (1/(n−1)) Σ_{i≠z} ℓ_i + ½λ‖θ‖² —
Koh & Liang's (1/n) H⁻¹∇ℓ(z) plus the common term of the L2 weight growing from 1/n to
1/(n−1) of the data, which puts the scores on the scale of exact leave-one-out. So the score is
the rise of validation loss without z: higher = more helpful. A sample of node j is scored
with node j's final model and Hessian over node j's training data (decentralized), or the
global model and the Hessian over all training data (federated and centralized runs).

``if_ekfac`` approximates H per layer with EK-FAC (George et al., NeurIPS 2018, "Fast Approximate
Natural Gradient Descent in a Kronecker-factored Eigenbasis"; Grosse et al. 2023 for influence):
with a = the layer's input (1 appended for the bias) and δ = ∂ℓ/∂(its output),

    A = E[a aᵀ] = Q_A Λ_A Q_Aᵀ,   G = E[δ δᵀ] = Q_G Λ_G Q_Gᵀ,
    Λ*_ij = E[((Q_Gᵀ δ)_i (Q_Aᵀ a)_j)²]              (eigenvalue-corrected diagonal refit)
    H⁻¹ V ≈ Q_G [(Q_Gᵀ V Q_A) ⊘ (Λ* + λ + damping)] Q_Aᵀ   for a gradient V = [∂W, ∂b] (out × in+1).

δ follows ``influence.fisher``: the expectation over the model's own labels y ~ softmax(f(x))
(one backward pass per class; then E[δδᵀ] is the Gauss–Newton matrix, which for the last layer
is the exact Hessian of the cross-entropy), one label drawn per sample from (seed,
"ekfac-labels", node), or the true labels (the empirical Fisher). ``damping`` null adds
0.1 × the mean of Λ* (kronfluence's heuristic) when the run has no L2 term, else nothing.
``if_exact`` uses the exact Hessian of those layers instead (``torch.func.hessian``; small
layers only): the reference the EK-FAC is measured against.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from fedweave.core.population import Buffers
from fedweave.errors import UserError
from fedweave.influence.base import ScoredRun, Scorer, Scores, register_scorer
from fedweave.influence.probe import CHUNK
from fedweave.rng import torch_generator

EXACT_MAX = 20_000  # parameters of the chosen layers if_exact accepts (its Hessian is P²)


def chosen_layers(model: nn.Module, names: list[str] | None) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules named ``names`` (default: the last one in module order)."""
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserError("if_ekfac / if_exact score nn.Linear layers and this model has none")
    if names is None:
        return linears[-1:]
    by_name = dict(linears)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise UserError(f"influence.layers: {unknown[0]!r} is not an nn.Linear of model "
                        f"{type(model).__name__}; choose from {[n for n, _ in linears]}")
    return [(n, by_name[n]) for n in names]


def layer_params(name: str, module: nn.Linear) -> list[str]:
    prefix = f"{name}." if name else ""
    return [f"{prefix}weight"] + ([f"{prefix}bias"] if module.bias is not None else [])


@dataclass
class Layer:
    """One layer's eigenbasis and corrected eigenvalues."""

    name: str
    params: list[str]
    qa: torch.Tensor
    qg: torch.Tensor
    lam: torch.Tensor


class Captured:
    """Forward pass of one model with the chosen layers' inputs a and outputs s recorded
    (outputs keep their graph, so ∂ℓ/∂s is one ``autograd.grad``)."""

    def __init__(self, run: ScoredRun, layers: list[tuple[str, nn.Linear]]) -> None:
        self.run, self.layers = run, layers

    def __call__(self, theta: torch.Tensor, buffers: Buffers, x: torch.Tensor
                 ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        inputs: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}

        def hook(name: str):  # type: ignore[no-untyped-def]
            def record(mod: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor
                       ) -> None:
                inputs[name], outputs[name] = args[0], out
            return record

        handles = [m.register_forward_hook(hook(n)) for n, m in self.layers]
        model = self.run.ctx.model
        was = model.training
        model.eval()
        try:
            p = self.run.ctx.layout.views(theta.detach().clone().requires_grad_(True))
            logits = functional_call(model, (p, buffers), (x,))
        finally:
            model.train(was)
            for h in handles:
                h.remove()
        acts = []
        for n, m in self.layers:
            a = inputs[n].detach().flatten(0, -2) if inputs[n].dim() > 2 else inputs[n].detach()
            if m.bias is not None:
                a = torch.cat([a, a.new_ones(len(a), 1)], 1)
            acts.append(a.double())
        return logits, acts, [outputs[n] for n, _ in self.layers]


def output_grads(logits: torch.Tensor, outs: list[torch.Tensor], y: torch.Tensor | None,
                 fisher: str, gen: torch.Generator | None) -> list[torch.Tensor]:
    """Per layer ``[K, B, out]``: ∂ℓ/∂s per sample for K label draws: every class weighted by
    √p (expected), one sampled label, or the true label ``y`` (empirical / scoring)."""
    p = torch.softmax(logits.detach(), 1)
    draws: list[tuple[torch.Tensor, torch.Tensor | None]]
    if fisher == "expected" and y is None:
        draws = [(torch.full_like(p[:, 0], c, dtype=torch.int64), p[:, c].sqrt())
                 for c in range(p.shape[1])]
    elif fisher == "sampled" and y is None:
        draws = [(torch.multinomial(p.double().cpu(), 1, generator=gen).flatten()
                  .to(logits.device), None)]
    else:
        assert y is not None
        draws = [(y, None)]
    per_layer: list[list[torch.Tensor]] = [[] for _ in outs]
    for k, (labels, w) in enumerate(draws):
        loss = F.cross_entropy(logits, labels, reduction="none")
        total = (loss * w).sum() if w is not None else loss.sum()
        grads = torch.autograd.grad(total, outs, retain_graph=k < len(draws) - 1)
        for i, g in enumerate(grads):
            per_layer[i].append(g.detach().double())
    return [torch.stack(g) for g in per_layer]


def batches(run: ScoredRun, nodes: list[int]):  # type: ignore[no-untyped-def]
    """(node, inputs, labels) in chunks over the training samples of ``nodes``."""
    for j in nodes:
        x, y = run.train(j)
        for s in range(0, len(y), CHUNK):
            yield j, x[s: s + CHUNK], y[s: s + CHUNK]


def fit_ekfac(run: ScoredRun, theta: torch.Tensor, buffers: Buffers, nodes: list[int],
              layers: list[tuple[str, nn.Linear]], fisher: str) -> list[Layer]:
    """EK-FAC of the training loss of ``nodes``' samples at θ (two passes over them)."""
    capture = Captured(run, layers)
    gen = torch_generator(run.config.seed, "ekfac-labels", nodes[0])
    n = 0
    a_cov: list[torch.Tensor] = []
    g_cov: list[torch.Tensor] = []
    for _, x, y in batches(run, nodes):
        logits, acts, outs = capture(theta, buffers, x)
        deltas = output_grads(logits, outs, y if fisher == "empirical" else None, fisher, gen)
        for i, (a, d) in enumerate(zip(acts, deltas, strict=True)):
            a_term, g_term = a.T @ a, torch.einsum("kbi,kbj->ij", d, d)
            if len(a_cov) <= i:
                a_cov.append(a_term)
                g_cov.append(g_term)
            else:
                a_cov[i] += a_term
                g_cov[i] += g_term
        n += len(x)
    bases = [(torch.linalg.eigh(a / n)[1], torch.linalg.eigh(g / n)[1])
             for a, g in zip(a_cov, g_cov, strict=True)]
    gen = torch_generator(run.config.seed, "ekfac-labels", nodes[0])  # the same draws again
    lam = [torch.zeros(qg.shape[0], qa.shape[0], dtype=torch.float64) for qa, qg in bases]
    for _, x, y in batches(run, nodes):
        logits, acts, outs = capture(theta, buffers, x)
        deltas = output_grads(logits, outs, y if fisher == "empirical" else None, fisher, gen)
        for i, (a, d) in enumerate(zip(acts, deltas, strict=True)):
            qa, qg = bases[i]
            lam[i] += torch.einsum("kbi,bj->ij", (d @ qg) ** 2, (a @ qa) ** 2)
    return [Layer(name, layer_params(name, m), qa, qg, lm / n)
            for (name, m), (qa, qg), lm in zip(layers, bases, lam, strict=True)]


def l2_strength(run: ScoredRun) -> float:
    return run.config.train.l2_lambda + run.config.train.weight_decay


def damping(run: ScoredRun, mean_eigenvalue: float) -> float:
    """``influence.damping``, or its default (0.1 × mean eigenvalue without an L2 term)."""
    value = run.config.influence.damping
    if value is not None:
        return value
    return 0.0 if l2_strength(run) > 0 else 0.1 * mean_eigenvalue


def layer_matrix(run: ScoredRun, flat: torch.Tensor, layer: Layer) -> torch.Tensor:
    """A gradient's entries of one layer as ``[∂W, ∂b]`` (out × in+1)."""
    views = run.ctx.layout.views(flat)
    w = views[layer.params[0]].double()
    return torch.cat([w, views[layer.params[1]].double().unsqueeze(1)], 1) \
        if len(layer.params) > 1 else w


class InfluenceFunction(Scorer):
    """Shared flow: per group of nodes with one model and Hessian, fit, then score."""

    def score(self, run: ScoredRun) -> Scores:
        params, buffers = run.final_models()
        layers = chosen_layers(run.ctx.model, run.config.influence.layers)
        groups = [[j] for j in range(run.data.nodes)] if run.kind == "decentralized" \
            else [list(range(run.data.nodes))]
        values: dict[int, torch.Tensor] = {}
        meta: dict[str, float] = {}
        for nodes in groups:
            theta, b = run.model_of(params, buffers, nodes[0])
            n = sum(len(run.data.train_idx[j]) for j in nodes)
            solve = self.fit(run, theta, b, nodes, layers, meta)
            for j in nodes:
                xv, yv = run.validation(j)
                ihvp = solve(run.probe.mean_grad(theta, b, xv, yv))
                common = l2_strength(run) * self.dot(run, ihvp, theta, layers)
                values[j] = (self.apply(run, theta, b, j, layers, ihvp) + common) / max(n - 1, 1)
        return Scores.per_node(run.data, [values[j] for j in range(run.data.nodes)],
                               {"layers": [n for n, _ in layers], **meta})

    def fit(self, run: ScoredRun, theta: torch.Tensor, buffers: Buffers, nodes: list[int],
            layers: list[tuple[str, nn.Linear]], meta: dict[str, float]):  # type: ignore[no-untyped-def]
        """A function validation gradient [P] → H⁻¹ v (what ``apply`` needs)."""
        raise NotImplementedError

    def apply(self, run: ScoredRun, theta: torch.Tensor, buffers: Buffers, node: int,
              layers: list[tuple[str, nn.Linear]], ihvp) -> torch.Tensor:  # type: ignore[no-untyped-def]
        """[n_node]: ⟨∇ℓ(z), H⁻¹v⟩ for every training sample z of ``node``."""
        raise NotImplementedError

    def dot(self, run: ScoredRun, ihvp, theta: torch.Tensor,  # type: ignore[no-untyped-def]
            layers: list[tuple[str, nn.Linear]]) -> float:
        """⟨H⁻¹v, θ⟩ over the chosen layers."""
        raise NotImplementedError


@register_scorer("if_ekfac")
class IFEKFAC(InfluenceFunction):
    def fit(self, run: ScoredRun, theta: torch.Tensor, buffers: Buffers, nodes: list[int],
            layers: list[tuple[str, nn.Linear]], meta: dict[str, float]):  # type: ignore[no-untyped-def]
        fitted = fit_ekfac(run, theta, buffers, nodes, layers, run.config.influence.fisher)
        mean = float(torch.cat([f.lam.flatten() for f in fitted]).mean())
        shift = l2_strength(run) + damping(run, mean)
        meta["damping"] = shift - l2_strength(run)

        self.fitted = fitted

        def solve(v: torch.Tensor) -> list[torch.Tensor]:
            out = []
            for f in fitted:
                m = f.qg.T @ layer_matrix(run, v, f) @ f.qa
                out.append(f.qg @ (m / (f.lam + shift)) @ f.qa.T)
            return out
        return solve

    def dot(self, run: ScoredRun, ihvp, theta: torch.Tensor,  # type: ignore[no-untyped-def]
            layers: list[tuple[str, nn.Linear]]) -> float:
        return float(sum((m * layer_matrix(run, theta, f)).sum()
                         for m, f in zip(ihvp, self.fitted, strict=True)))

    def apply(self, run: ScoredRun, theta: torch.Tensor, buffers: Buffers, node: int,
              layers: list[tuple[str, nn.Linear]], ihvp) -> torch.Tensor:  # type: ignore[no-untyped-def]
        capture = Captured(run, layers)
        parts = []
        for _, x, y in batches(run, [node]):
            logits, acts, outs = capture(theta, buffers, x)
            deltas = output_grads(logits, outs, y, "empirical", None)
            parts.append(torch.stack([torch.einsum("bi,ij,bj->b", d[0], m, a) for d, m, a
                                      in zip(deltas, ihvp, acts, strict=True)]).sum(0))
        return torch.cat(parts).cpu()


@register_scorer("if_exact")
class IFExact(InfluenceFunction):
    def fit(self, run: ScoredRun, theta: torch.Tensor, buffers: Buffers, nodes: list[int],
            layers: list[tuple[str, nn.Linear]], meta: dict[str, float]):  # type: ignore[no-untyped-def]
        names = [p for n, m in layers for p in layer_params(n, m)]
        views = run.ctx.layout.views(theta.detach().double())
        size = sum(views[p].numel() for p in names)
        if size > EXACT_MAX:
            raise UserError(f"if_exact: the chosen layers have {size} parameters (its Hessian "
                            f"is their square; at most {EXACT_MAX}); use if_ekfac")
        model = run.ctx.model  # a template: functional_call gives it double parameters
        bufs = {k: v.double() if v.is_floating_point() else v for k, v in buffers.items()}
        fixed = {k: v for k, v in views.items() if k not in names}
        n = 0
        h = torch.zeros(size, size, dtype=torch.float64)
        was = model.training
        model.eval()
        try:
            for _, x, y in batches(run, nodes):
                def total(flat: torch.Tensor, x=x, y=y) -> torch.Tensor:  # type: ignore[no-untyped-def]
                    sel, off = {}, 0
                    for p in names:
                        sel[p] = flat[off: off + views[p].numel()].view_as(views[p])
                        off += views[p].numel()
                    logits = functional_call(model, ({**fixed, **sel}, bufs), (x.double(),))
                    return F.cross_entropy(logits, y, reduction="sum")
                start = torch.cat([views[p].flatten() for p in names])
                h += hessian(total)(start)
                n += len(x)
        finally:
            model.train(was)
        h = h / n
        mean = float(torch.linalg.eigvalsh(h).mean())
        shift = l2_strength(run) + damping(run, mean)
        meta["damping"] = shift - l2_strength(run)
        h += shift * torch.eye(size, dtype=torch.float64)
        index = torch.cat([torch.arange(run.ctx.layout.offsets[run.ctx.layout.names.index(p)],
                                        run.ctx.layout.offsets[run.ctx.layout.names.index(p)]
                                        + views[p].numel()) for p in names])

        def solve(v: torch.Tensor) -> torch.Tensor:
            out = torch.zeros_like(v, dtype=torch.float64)
            out[index] = torch.linalg.solve(h, v.double()[index])
            return out
        return solve

    def dot(self, run: ScoredRun, ihvp, theta: torch.Tensor,  # type: ignore[no-untyped-def]
            layers: list[tuple[str, nn.Linear]]) -> float:
        return float(ihvp @ theta.double())

    def apply(self, run: ScoredRun, theta: torch.Tensor, buffers: Buffers, node: int,
              layers: list[tuple[str, nn.Linear]], ihvp) -> torch.Tensor:  # type: ignore[no-untyped-def]
        x, y = run.train(node)
        return run.probe.sample_dots(theta, buffers, x, y, ihvp.to(theta.dtype)).double().cpu()
