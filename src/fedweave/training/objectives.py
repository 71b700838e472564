"""Client objectives: the local loss as an object, written once for every gradient engine.

A node's local loss is a *data term* on the model's outputs plus *parameter terms*:

    f_i(θ) = (1/|B|) Σ_{b∈B} ℓ(f(x_b; θ), y_b)  +  Σ_terms r(θ)

- the data term (``DataLoss``) is evaluated inside the engines (the loop engine on one model,
  the vectorized one under ``vmap``), so it must be a pure function of the logits, the labels
  and the samples' global training indices (``idx``: a distillation loss looks its teacher
  outputs up with them);
- parameter terms (``ParamTerm``) have closed-form gradients added to the engine's gradient
  rows in place (no second autograd pass): ½λ‖θ‖² (``L2``), FedProx's (μ/2)‖θ − θ_c‖²
  (``Proximal``, Li et al. 2020), SCAFFOLD's linear correction ⟨c − c_i, θ⟩ (``Linear``,
  Karimireddy et al. 2020);
- MOON's model-contrastive term (``ModelContrastive``, Li, He & Song 2021) is a data term that
  also reads the representation of the forward (``training.representation``);
- ``mask`` (0/1 like the parameters) keeps pruned weights at zero after every step.

A new client-side term is one class: subclass ``DataLoss`` (and override ``per_sample``) or
``ParamTerm``. ``Objective.rows`` restricts per-row tensors ([K, P]) to a subset of the
cohort, which is how the distributed engine hands each rank its share.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from fedweave.training.representation import RepresentationTap


class DataLoss:
    """A per-sample loss ℓ(logits, y); subclasses implement ``per_sample``."""

    def per_sample(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
                   ) -> torch.Tensor:
        """Loss of every sample ``[B]`` (``idx``: the samples' global training indices)."""
        raise NotImplementedError

    def mean(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Mean over the batch (every sample real)."""
        return self.per_sample(logits, y, idx).mean()

    def weighted_mean(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                      w: torch.Tensor) -> torch.Tensor:
        """Σ_b w_b ℓ_b / max(Σ_b w_b, 1) (padding samples have w = 0)."""
        return (self.per_sample(logits, y, idx) * w).sum() / w.sum().clamp(min=1)


class CrossEntropy(DataLoss):
    """Softmax cross-entropy, the default data term (uses the fused PyTorch kernels)."""

    def per_sample(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
                   ) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="none")

    def mean(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    def weighted_mean(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                      w: torch.Tensor) -> torch.Tensor:
        return (F.cross_entropy(logits, y, reduction="none") * w).sum() / w.sum().clamp(min=1)


CROSS_ENTROPY = CrossEntropy()


@dataclass(frozen=True)
class Distillation(DataLoss):
    """Knowledge distillation (Hinton et al. 2015) to fixed teacher outputs:

        ℓ = α·T²·KL(softmax(t_b/T) ‖ softmax(z_b/T)) + (1 − α)·CE(z_b, y_b)

    ``teacher_logits[N_train, C]`` holds the teacher's logits of every training sample,
    looked up by the batch's global indices."""

    teacher_logits: torch.Tensor
    temperature: float = 1.0
    alpha: float = 1.0

    def per_sample(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
                   ) -> torch.Tensor:
        t = self.temperature
        target = F.log_softmax(self.teacher_logits[idx] / t, dim=-1)
        student = F.log_softmax(logits / t, dim=-1)
        kl = (target.exp() * (target - student)).sum(-1) * (t * t)
        if self.alpha == 1.0:
            return kl
        return self.alpha * kl + (1 - self.alpha) * F.cross_entropy(logits, y, reduction="none")


class ModelContrastive(DataLoss):
    """MOON's local loss (Li, He & Song 2021, "Model-Contrastive Federated Learning"):

        ℓ_b = CE(z_b) + μ·ℓ_con,   ℓ_con = −log [ e^{sim(z, z_glob)/τ} /
                                              (e^{sim(z, z_glob)/τ} + e^{sim(z, z_prev)/τ}) ]

    sim = cosine similarity; z: the representation of the model being trained (the input of
    its last Linear layer, read from ``tap``, a ``training.representation.RepresentationTap``
    armed around the forward); z_glob, z_prev: the server model's and the client's previous
    local model's representations of the same sample, fixed for the round and looked up by the
    sample's global training index (``set_targets``). The cross-entropy part uses the same
    kernels as ``CrossEntropy``, so μ = 0 trains exactly as cross-entropy."""

    def __init__(self, mu: float, tau: float, tap: RepresentationTap) -> None:
        self.mu, self.tau, self.tap = mu, tau, tap
        self.pos = torch.zeros(0, dtype=torch.int64)
        self.z_glob = self.z_prev = torch.zeros(0, 0)

    def set_targets(self, idx: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor,
                    total: int) -> None:
        """The round's targets: rows of ``z_glob``/``z_prev`` ``[n, d]`` for the global
        training indices ``idx[n]`` (``total``: training samples in all)."""
        self.pos = torch.zeros(total, dtype=torch.int64, device=idx.device)
        self.pos[idx] = torch.arange(len(idx), device=idx.device)
        self.z_glob, self.z_prev = z_glob, z_prev

    def contrastive(self, idx: torch.Tensor) -> torch.Tensor:
        """ℓ_con of every sample of the latest forward ``[B]``."""
        z = self.tap.take().flatten(1)
        rows = self.pos[idx]
        sim_g = F.cosine_similarity(z, self.z_glob[rows], dim=-1) / self.tau
        sim_p = F.cosine_similarity(z, self.z_prev[rows], dim=-1) / self.tau
        return torch.logsumexp(torch.stack([sim_g, sim_p]), dim=0) - sim_g

    def per_sample(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor
                   ) -> torch.Tensor:
        return F.cross_entropy(logits, y, reduction="none") + self.mu * self.contrastive(idx)

    def mean(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y) + self.mu * self.contrastive(idx).mean()

    def weighted_mean(self, logits: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
                      w: torch.Tensor) -> torch.Tensor:
        denom = w.sum().clamp(min=1)
        ce = (F.cross_entropy(logits, y, reduction="none") * w).sum() / denom
        return ce + self.mu * (self.contrastive(idx) * w).sum() / denom


class ParamTerm:
    """A parameter term r(θ) whose gradient is added to the gradient rows ``g[K, P]``."""

    def add_grad(self, g: torch.Tensor, x: torch.Tensor) -> None:
        """g += ∇r(x), in place (``x``: the rows' current parameters)."""
        raise NotImplementedError

    def rows(self, sel: torch.Tensor, k: int) -> ParamTerm:
        """This term for the rows ``sel`` of a ``k``-row cohort."""
        return self


def _rows(t: torch.Tensor, sel: torch.Tensor, k: int) -> torch.Tensor:
    """Per-row tensors (``[k, ...]``) are sliced; shared ones (``[P]``) pass unchanged."""
    return t[sel.to(t.device)] if t.dim() >= 2 and t.shape[0] == k else t


@dataclass(frozen=True)
class L2(ParamTerm):
    """½λ‖θ‖²: ∇ = λθ (``train.l2_lambda``)."""

    lam: float

    def add_grad(self, g: torch.Tensor, x: torch.Tensor) -> None:
        g.add_(x, alpha=self.lam)


@dataclass(frozen=True)
class Proximal(ParamTerm):
    """(μ/2)‖θ − θ_c‖² (FedProx): ∇ = μ(θ − θ_c); ``center`` is ``[P]`` or ``[K, P]``."""

    mu: float
    center: torch.Tensor

    def add_grad(self, g: torch.Tensor, x: torch.Tensor) -> None:
        g.add_(x - self.center, alpha=self.mu)

    def rows(self, sel: torch.Tensor, k: int) -> Proximal:
        return replace(self, center=_rows(self.center, sel, k))


@dataclass(frozen=True)
class Linear(ParamTerm):
    """⟨c, θ⟩: ∇ = c (SCAFFOLD's correction c − c_i); ``c`` is ``[P]`` or ``[K, P]``."""

    c: torch.Tensor

    def add_grad(self, g: torch.Tensor, x: torch.Tensor) -> None:
        g.add_(self.c)

    def rows(self, sel: torch.Tensor, k: int) -> Linear:
        return replace(self, c=_rows(self.c, sel, k))


@dataclass(frozen=True)
class Objective:
    """Data term + parameter terms (applied in order) + optional 0/1 ``mask``."""

    data: DataLoss = CROSS_ENTROPY
    terms: tuple[ParamTerm, ...] = field(default_factory=tuple)
    mask: torch.Tensor | None = None

    def with_terms(self, *terms: ParamTerm) -> Objective:
        """The same objective with ``terms`` added before its own (e.g. the run's L2)."""
        return replace(self, terms=(*terms, *self.terms))

    def add_param_grads(self, g: torch.Tensor, x: torch.Tensor) -> None:
        for term in self.terms:
            term.add_grad(g, x)

    def rows(self, sel: torch.Tensor, k: int) -> Objective:
        """The objective of rows ``sel`` of a ``k``-row cohort (distributed shares)."""
        mask = None if self.mask is None else _rows(self.mask, sel, k)
        return replace(self, terms=tuple(t.rows(sel, k) for t in self.terms), mask=mask)


def proximal(mu: float, center: torch.Tensor) -> tuple[ParamTerm, ...]:
    """FedProx's term, or nothing when μ = 0."""
    return (Proximal(mu, center),) if mu else ()
