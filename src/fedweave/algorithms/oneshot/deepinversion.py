"""DeepInversion and Adaptive DeepInversion: images synthesised from trained teachers alone.

Yin et al. 2020, "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion" (CVPR),
as reference system 003 (Fed_distill, "Dataset Distillation for One-Shot Federated Learning")
uses it. A batch x̃ ∈ R^{B×C×H×W} starts as N(0, 1) noise (in normalised input units) with
labels y drawn uniformly from the teacher's classes, and Adam minimises, at inputs
x̂ = jitter(x̃) (a random roll by up to ±``jitter`` pixels per axis, optionally a random mirror)::

    L(x̃) = CE(f_t(x̂)[classes], y) + α_l2 ‖x̂‖ + α_tv TV(x̂)
           + α_bn Σ_l (‖σ²_l(x̂) − running_var_l‖₂ + ‖μ_l(x̂) − running_mean_l‖₂)
           [+ α_comp (1 − JS(f_t(x̂) ‖ f_s(x̂)))]            (Adaptive DeepInversion)

‖x̂‖ is the Frobenius norm of the batch; TV the sum of the Frobenius norms of the four
difference maps (horizontal, vertical and the two diagonals); μ_l, σ²_l the mean and biased
variance of the input of the l-th BatchNorm layer over (N, H, W); JS the Jensen–Shannon
divergence of the teacher's and student's softmax at temperature T (probabilities clamped to
[0.01, 0.99]; ``reversed_kl`` is the seed's and NVlabs' ½KL(m‖p) + ½KL(m‖q) instead), both
restricted to the teacher's classes. A fresh Adam per batch (the seed keeps its state across
batches), and the lowest-loss iterate is returned (NVlabs aliases it to the last one).

*Sampling DeepInversion* (reference system 003's report, Algorithm 1): every iteration draws n
of the T teachers without replacement and averages their losses; each teacher's CE is weighted
by its class frequencies (labels are uniform over every class; a teacher that never saw a class has
weight 0 for it, where the seed crashes), the competition term stays on (the seed's script
drops it).

Vectorized: a *group* of G batches is optimised at once. Every iteration is one call of
``vmap(functional_call)`` over the (batch, teacher) pairs of the group (G pairs when teachers
are cycled, G·n when sampling), with the teachers' parameters stacked; the student (Adaptive
DI) is one forward over the G·B images. Every random draw (initial noise, labels, jitter,
flips, sampled teachers) comes from (seed, purpose, batch id), so a batch is the same whatever
group it is made in, and a resumed synthesis regenerates nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from fedweave.rng import torch_generator

CLAMP = (0.01, 0.99)


# ---------------------------------------------------------------------------- the loss terms


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """TV(x) = Σ_d ‖d(x)‖_F over the four difference maps of a batch ``[B, C, H, W]``:
    x[h, w] − x[h, w+1], x[h, w] − x[h+1, w], x[h+1, w] − x[h, w+1], x[h, w] − x[h+1, w+1]."""
    d1 = x[..., :, :-1] - x[..., :, 1:]
    d2 = x[..., :-1, :] - x[..., 1:, :]
    d3 = x[..., 1:, :-1] - x[..., :-1, 1:]
    d4 = x[..., :-1, :-1] - x[..., 1:, 1:]
    return d1.norm() + d2.norm() + d3.norm() + d4.norm()


def bn_statistics(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor
                  ) -> torch.Tensor:
    """‖σ²(x) − running_var‖₂ + ‖μ(x) − running_mean‖₂ for the input ``x`` of a BatchNorm
    layer (channels on dim 1; mean and biased variance over every other dim)."""
    dims = [d for d in range(x.dim()) if d != 1]
    mean = x.mean(dims)
    var = x.var(dims, unbiased=False)
    return (var - running_var).norm() + (mean - running_mean).norm()


def _probs(logits: torch.Tensor, mask: torch.Tensor | None, temperature: float
           ) -> torch.Tensor:
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    return F.softmax(logits / temperature, dim=-1)


def jensen_shannon(p_logits: torch.Tensor, q_logits: torch.Tensor, temperature: float = 3.0,
                   mask: torch.Tensor | None = None, reversed_kl: bool = False) -> torch.Tensor:
    """JS(p ‖ q) = ½ Σ_c p_c log(p_c/m_c) + ½ Σ_c q_c log(q_c/m_c), m = ½(p + q), averaged over
    the batch; p, q the softmax of ``logits / temperature`` over the classes in ``mask`` (all
    when None). As in the seed, p, q and m are clamped to [0.01, 0.99] (m from the unclamped
    p, q) and the result to [0, 1]. ``reversed_kl``: the seed's ½KL(m‖p) + ½KL(m‖q)."""
    p = _probs(p_logits, mask, temperature)
    q = _probs(q_logits, mask, temperature)
    m = (0.5 * (p + q)).clamp(*CLAMP)
    p, q = p.clamp(*CLAMP), q.clamp(*CLAMP)
    if reversed_kl:
        terms = 0.5 * (m * (m.log() - p.log())) + 0.5 * (m * (m.log() - q.log()))
    else:
        terms = 0.5 * (p * (p.log() - m.log())) + 0.5 * (q * (q.log() - m.log()))
    if mask is not None:
        terms = terms * mask
    return terms.sum(-1).mean().clamp(0.0, 1.0)


def weighted_cross_entropy(logits: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor,
                           mask: torch.Tensor | None = None) -> torch.Tensor:
    """Σ_b w_{y_b} CE_b / Σ_b w_{y_b} (``nn.CrossEntropyLoss(weight)``), the logits restricted
    to the classes in ``mask``; 0 when no label of the batch has weight."""
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    nll = -F.log_softmax(logits, dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)
    w = class_weight[y]
    nll = torch.where(w > 0, nll, torch.zeros_like(nll))  # -inf logits of weightless labels
    return (w * nll).sum() / w.sum().clamp(min=torch.finfo(w.dtype).tiny)


# ---------------------------------------------------------------------------- teachers


class _BNProbe:
    """Forward hooks that collect ``bn_statistics`` of every BatchNorm layer's input while
    ``terms`` is a list (inside one functional forward, under vmap too)."""

    def __init__(self, model: nn.Module) -> None:
        self.terms: list[torch.Tensor] | None = None
        self.layers = 0
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.register_forward_hook(self._hook)
                self.layers += 1

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        if self.terms is not None:
            self.terms.append(bn_statistics(inputs[0], module.running_mean,  # type: ignore
                                            module.running_var))  # type: ignore[arg-type]


@dataclass
class Teachers:
    """T teachers of one architecture: stacked parameters and buffers, eval mode, plus each
    teacher's classes (``mask[T, C]``) and class frequencies (``freq[T, C]``, rows sum to 1)."""

    model: nn.Module
    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    mask: torch.Tensor
    freq: torch.Tensor
    probe: _BNProbe = field(init=False)

    def __post_init__(self) -> None:
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.probe = _BNProbe(self.model)
        if not self.probe.layers:
            raise ValueError("DeepInversion needs teachers with BatchNorm layers (model.norm: "
                             "batch): their running statistics are what the images match")

    @property
    def count(self) -> int:
        return int(self.mask.shape[0])

    def _forward(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                 x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, {**params, **buffers}, (x,))

    def _forward_bn(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.probe.terms = []
        try:
            logits = self._forward(params, buffers, x)
            bn = torch.stack(self.probe.terms).sum()
        finally:
            self.probe.terms = None
        return logits, bn

    def select(self, index: torch.Tensor) -> tuple[dict[str, torch.Tensor],
                                                   dict[str, torch.Tensor]]:
        return ({k: v[index] for k, v in self.params.items()},
                {k: v[index] for k, v in self.buffers.items()})

    def logits_and_bn(self, index: torch.Tensor, x: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher ``index[k]`` on batch ``x[k]``: logits ``[K, B, C]`` and the BN-statistics
        sum ``[K]``, one vmapped call."""
        params, buffers = self.select(index)
        out: tuple[torch.Tensor, torch.Tensor] = vmap(self._forward_bn)(params, buffers, x)
        return out

    @torch.no_grad()
    def logits(self, x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
        """Every teacher's logits on ``x[B]``: ``[T, B, C]``."""
        run = vmap(self._forward, in_dims=(0, 0, None))
        return torch.cat([run(self.params, self.buffers, x[i: i + chunk])
                          for i in range(0, len(x), chunk)], dim=1)

    @torch.no_grad()
    def ensemble_probs(self, x: torch.Tensor) -> torch.Tensor:
        """The ensemble's prediction: the mean of the teachers' softmax, ``[B, C]``."""
        return F.softmax(self.logits(x), dim=-1).mean(0)


# ---------------------------------------------------------------------------- synthesis


@dataclass(frozen=True)
class InversionSettings:
    """The loss weights and optimisation of one batch (``SynthesisConfig.resolved``)."""

    lr: float
    iterations: int
    tv: float
    l2: float
    bn: float
    competition: float
    temperature: float = 3.0
    reversed_kl: bool = False
    jitter: int = 2
    flip: bool = False
    sampling: int = 0


@dataclass
class Inverted:
    """A synthesised group: the lowest-loss images ``[G, B, C, H, W]`` (normalised units),
    their labels ``[G, B]``, the loss of each at that iterate and the teachers used."""

    images: torch.Tensor
    labels: torch.Tensor
    loss: torch.Tensor
    teachers: list[list[int]]


def batch_labels(seed: int, batch: int, classes: torch.Tensor, size: int) -> torch.Tensor:
    """Labels of batch ``batch``: uniform over ``classes`` (with replacement)."""
    gen = torch_generator(seed, "inversion-labels", batch)
    return classes[torch.randint(len(classes), (size,), generator=gen)]


def batch_noise(seed: int, batch: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The N(0, 1) start of batch ``batch``."""
    return torch.randn(shape, generator=torch_generator(seed, "inversion-init", batch))


class Inversion:
    """Makes batches of synthetic images from ``teachers`` (and, for Adaptive DeepInversion,
    against a student). Batch b uses teacher b mod T, or every iteration ``sampling`` teachers
    drawn from (seed, "inversion-teachers", b)."""

    def __init__(self, teachers: Teachers, settings: InversionSettings, image_shape:
                 tuple[int, ...], batch_size: int, seed: int) -> None:
        if settings.sampling > teachers.count:
            raise ValueError(f"sampling {settings.sampling} teachers of {teachers.count}")
        self.teachers, self.s, self.shape = teachers, settings, tuple(image_shape)
        self.batch_size, self.seed = batch_size, seed

    # -- what each batch is made of
    def teacher_of(self, batch: int) -> int:
        return batch % self.teachers.count

    def labels(self, batch: int) -> torch.Tensor:
        t = self.teachers
        known = t.mask.any(0) if self.s.sampling else t.mask[self.teacher_of(batch)]
        return batch_labels(self.seed, batch, torch.nonzero(known.cpu()).flatten(),
                            self.batch_size)

    def _draws(self, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Per-iteration jitter offsets ``[I, 2]``, flips ``[I]`` and sampled teachers
        ``[I, n]`` of one batch."""
        it, j = self.s.iterations, self.s.jitter
        gen = torch_generator(self.seed, "inversion-jitter", batch)
        shifts = torch.randint(-j, j + 1, (it, 2), generator=gen)
        flips = torch.rand(it, generator=gen) < 0.5
        if not self.s.sampling:
            return shifts, flips, None
        gen = torch_generator(self.seed, "inversion-teachers", batch)
        order = torch.rand(it, self.teachers.count, generator=gen).argsort(dim=1)
        return shifts, flips, order[:, : self.s.sampling]

    # -- the optimisation
    def group_loss(self, x: torch.Tensor, labels: torch.Tensor, pair_batch: torch.Tensor,
                   pair_teacher: torch.Tensor, pair_weight: torch.Tensor,
                   student: tuple[nn.Module, dict[str, torch.Tensor]] | None = None
                   ) -> dict[str, torch.Tensor]:
        """The loss of each batch of ``x[G, B, ...]`` (already jittered) as the weighted sum
        over its (batch, teacher) pairs, with its terms (each ``[G]``)."""
        s, t = self.s, self.teachers
        logits, bn = t.logits_and_bn(pair_teacher, x[pair_batch])
        if s.sampling:  # the teacher's whole head, CE weighted by its class frequencies
            mask = torch.ones_like(t.mask[pair_teacher])
            weight = t.freq[pair_teacher]
        else:  # restricted to the teacher's classes
            mask = t.mask[pair_teacher]
            weight = mask.to(x.dtype)
        ce = vmap(weighted_cross_entropy)(logits, labels[pair_batch], weight, mask)
        per_pair = ce + s.bn * bn
        comp = torch.zeros_like(ce)
        if student is not None and s.competition:
            module, state = student
            g, b = x.shape[:2]
            s_logits = functional_call(module, state, (x.reshape(g * b, *x.shape[2:]),))
            s_logits = s_logits.reshape(g, b, -1)[pair_batch]
            js = vmap(lambda p, q, m: jensen_shannon(p, q, s.temperature, m, s.reversed_kl)
                      )(logits, s_logits, mask)
            comp = 1.0 - js
            per_pair = per_pair + s.competition * comp
        groups = x.shape[0]

        def per_batch(v: torch.Tensor) -> torch.Tensor:
            return torch.zeros(groups, dtype=v.dtype, device=v.device).index_add(
                0, pair_batch, v * pair_weight)

        loss = per_batch(per_pair)
        tv = vmap(total_variation)(x)
        l2 = x.flatten(1).norm(dim=1)
        loss = loss + s.tv * tv + s.l2 * l2
        return {"loss": loss, "ce": per_batch(ce), "bn": per_batch(bn),
                "competition": per_batch(comp), "tv": tv, "l2": l2}

    def _jitter(self, x: torch.Tensor, shifts: torch.Tensor, flips: torch.Tensor
                ) -> torch.Tensor:
        rows = []
        for g in range(x.shape[0]):
            xg = x[g]
            if self.s.jitter:
                xg = torch.roll(xg, shifts=(int(shifts[g, 0]), int(shifts[g, 1])), dims=(2, 3))
            if self.s.flip and bool(flips[g]):
                xg = xg.flip(3)
            rows.append(xg)
        return torch.stack(rows)

    def pairs(self, batches: list[int], sampled: torch.Tensor | None, device: torch.device
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(batch position, teacher, weight) of every pair of one iteration."""
        g = len(batches)
        if sampled is None:
            teacher = torch.tensor([self.teacher_of(b) for b in batches])
            return (torch.arange(g, device=device), teacher.to(device),
                    torch.ones(g, device=device))
        n = sampled.shape[1]
        return (torch.arange(g, device=device).repeat_interleave(n),
                sampled.reshape(-1).to(device), torch.full((g * n,), 1.0 / n, device=device))

    def run(self, batches: list[int], student: nn.Module | None = None) -> Inverted:
        """Synthesise ``batches`` (ids) together; ``student`` turns on the competition term
        (the student is evaluated in eval mode and not changed)."""
        device = self.teachers.mask.device
        g = len(batches)
        labels = torch.stack([self.labels(b) for b in batches]).to(device)
        start = torch.stack([batch_noise(self.seed, b, (self.batch_size, *self.shape))
                             for b in batches]).to(device)
        draws = [self._draws(b) for b in batches]
        shifts = torch.stack([d[0] for d in draws], dim=1)  # [I, G, 2]
        flips = torch.stack([d[1] for d in draws], dim=1)  # [I, G]
        sampled = (torch.stack([d[2] for d in draws], dim=1)  # type: ignore[misc]
                   if self.s.sampling else None)  # [I, G, n]
        x = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.s.lr)  # a fresh Adam for every group
        best = start.clone()
        best_loss = torch.full((g,), math.inf, device=device)
        frozen = None
        was_training = student.training if student is not None else False
        if student is not None:
            student.eval()
            frozen = (student, {**{k: v.detach() for k, v in student.named_parameters()},
                                **dict(student.named_buffers())})
        used: list[set[int]] = [set() for _ in batches]
        try:
            for i in range(self.s.iterations):
                pb, pt, pw = self.pairs(batches, None if sampled is None else sampled[i],
                                        device)
                for k, t in zip(pb.tolist(), pt.tolist(), strict=True):
                    used[k].add(t)
                xj = self._jitter(x, shifts[i], flips[i])
                terms = self.group_loss(xj, labels, pb, pt, pw, frozen)
                loss = terms["loss"].detach()
                better = loss < best_loss
                if bool(better.any()):
                    keep = better.view(-1, *([1] * (x.dim() - 1)))
                    best = torch.where(keep, x.detach(), best)
                    best_loss = torch.where(better, loss, best_loss)
                opt.zero_grad(set_to_none=True)
                terms["loss"].sum().backward()
                opt.step()
        finally:
            if student is not None and was_training:
                student.train()
        return Inverted(best.detach(), labels, best_loss, [sorted(u) for u in used])


# ---------------------------------------------------------------------------- diagnostics


@torch.no_grad()
def batch_quality(teachers: Teachers, x: torch.Tensor, labels: torch.Tensor,
                  teacher: torch.Tensor) -> dict[str, torch.Tensor]:
    """For batches ``x[G, B, ...]`` made for ``teacher[G]``: the BN-statistics term, the
    teacher's mean probability of the batch's labels (over its classes) and its accuracy."""
    logits, bn = teachers.logits_and_bn(teacher, x)
    probs = _probs(logits, teachers.mask[teacher].unsqueeze(1), 1.0)
    conf = probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1).mean(-1)
    acc = (logits.masked_fill(~teachers.mask[teacher].unsqueeze(1), float("-inf")).argmax(-1)
           == labels).float().mean(-1)
    return {"bn": bn, "confidence": conf, "accuracy": acc}
