"""Aggregators: the one seam between "rows trained in a round" and "the server update".

An aggregator maps the cohort's trained models ``rows[K, P]`` (with per-row weights, e.g.
training samples n_i, and the model they started from, ``center[P]``) to one model ``[P]``.
Every rule is also *batched*: ``combine(rows[G, M, P], weights[G, M], center[G, P], valid)``
aggregates G groups at once, ``valid[G, M]`` marking the real rows (a decentralized node's
neighbourhood is one group: itself and the copies it received, padded to the largest degree).
Every rule is a tensor op over the rows, never a loop over clients, and sees the gathered rows
of every process, so it works with the distributed engine.

    mean            (1/K) Σ_i x_i
    weighted_mean   Σ_i w_i x_i / Σ_i w_i                                  (FedAvg)
    median          coordinate-wise median (mean of the two middle values when K is even;
                    Yin et al. 2018)
    trimmed_mean    per coordinate, drop the ⌊βK⌋ largest and smallest values, average the
                    rest (Yin et al. 2018)
    krum            the row with the least Σ of squared distances to its K − f − 2 nearest
                    rows (Blanchard et al. 2017)
    multi_krum      the mean of the m rows with the best Krum scores (El Mhamdi et al. 2018)
    centered_clip   v ← v + Σ_i w̄_i (x_i − v)·min(1, τ/‖x_i − v‖), L times from v = center
                    (Karimireddy, He & Jaggi 2021; w̄ = normalised weights — equal weights give
                    the paper's rule; in a decentralized combine, w = the mixing row and one
                    iteration is ClippedGossip, He, Karimireddy & Jaggi 2022)
    norm_clip       Δ_i = x_i − center clipped to ‖Δ_i‖ ≤ τ, then the weighted mean
                    (server-side norm bounding, Sun et al. 2019)

``mean``, ``median``, ``trimmed_mean``, ``krum`` and ``multi_krum`` ignore the weights (a
Byzantine row could claim any weight). Rows with a NaN or inf are rejected before the rule
(``rejected`` counts them); when every row is non-finite the rule sees them all and the NaN
reaches the model, so a diverging run is still reported as diverged.

New rules: register a class with ``@register_aggregator(name, ConfigClass)``; the
``aggregator`` config section selects it by name (``aggregator.name: null`` keeps the
algorithm's own rule).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from pydantic import Field

from fedweave.config import AggregatorConfig, RootView, register_aggregator_config
from fedweave.core.population import weighted_mean
from fedweave.errors import UserError
from fedweave.registry import Registry


class Aggregator:
    """Combines trained rows into one model; subclasses implement ``combine`` (batched and
    masked) and may give ``__call__`` an exact single-group path."""

    def __init__(self, config: AggregatorConfig) -> None:
        self.config = config
        self.rejected = 0  # non-finite rows refused so far (the caller resets it per round)

    def min_rows(self) -> int:
        """Valid rows a group must have for the rule to be defined."""
        return 1

    def check_rows(self, count: int, where: str) -> None:
        """A clear error when groups of ``count`` rows are too small for this rule."""
        if count < self.min_rows():
            raise UserError(f"aggregator.name={self.config.name} needs at least "
                            f"{self.min_rows()} rows per aggregation, {where} has {count}: "
                            "lower aggregator.f or use another rule")

    def __call__(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor
                 ) -> torch.Tensor:
        # a finite row sum proves every entry finite (NaN and inf propagate; a sum that
        # overflows falls through to the exact check): one pass of adds instead of a [K, P] mask
        if bool(torch.isfinite(rows.sum(1)).all()):
            return self.single(rows, weights, center)
        finite = torch.isfinite(rows).all(1)
        if bool(finite.all()):
            return self.single(rows, weights, center)
        self.rejected += int((~finite).sum())
        if not bool(finite.any()):  # every upload corrupted: the model stays where it was
            return center.clone()
        return self.single(rows[finite], weights[finite], center)

    def single(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor
               ) -> torch.Tensor:
        """One group of finite rows ``[K, P]`` → ``[P]``."""
        return self.combine(rows[None], weights[None], center[None], None)[0]

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        """Groups ``rows[G, M, P]`` (``weights[G, M]``, ``center[G, P]``; ``valid[G, M]`` bool,
        None = every row) → ``[G, P]``."""
        raise NotImplementedError


AGGREGATORS: Registry[type[Aggregator]] = Registry("aggregator")


def register_aggregator(name: str, config_class: type[AggregatorConfig] = AggregatorConfig
                        ) -> Callable[[type[Aggregator]], type[Aggregator]]:
    """Register an aggregator and make ``aggregator.name: <name>`` select its config."""

    def add(cls: type[Aggregator]) -> type[Aggregator]:
        register_aggregator_config(name)(config_class)
        AGGREGATORS.register(name)(cls)
        return cls

    return add


# ------------------------------------------------------------------------------ helpers
def _mask(valid: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
    """valid[G, M] as the rows' dtype (all ones when None)."""
    if valid is None:
        return rows.new_ones(rows.shape[:2])
    return valid.to(rows.dtype)


def _masked_mean(rows: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Σ_i m_i x_i / Σ_i m_i per group (m: [G, M] non-negative)."""
    return torch.einsum("gm,gmp->gp", m / m.sum(1, keepdim=True).clamp_min(1e-30), rows)


def _sorted(rows: torch.Tensor, valid: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per coordinate the valid values ascending (invalid rows last) and the counts [G]."""
    count = rows.new_full(rows.shape[:1], rows.shape[1]) if valid is None \
        else valid.sum(1).to(rows.dtype)
    if valid is not None:
        rows = torch.where(valid[:, :, None], rows, torch.inf)
    return rows.sort(dim=1).values, count


def _norm_clip(delta: torch.Tensor, tau: float) -> torch.Tensor:
    """δ · min(1, τ/‖δ‖) over the last dim."""
    norm = delta.norm(dim=-1, keepdim=True)
    return delta * (tau / norm.clamp_min(1e-30)).clamp(max=1.0)


# ------------------------------------------------------------------------------ the rules
@register_aggregator("mean")
class Mean(Aggregator):
    """(1/K) Σ_i x_i: every row counts the same (SCAFFOLD's server average)."""

    def single(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor
               ) -> torch.Tensor:
        return rows.mean(0)

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        return _masked_mean(rows, _mask(valid, rows))


@register_aggregator("weighted_mean")
class WeightedMean(Aggregator):
    """Σ_i w_i x_i / Σ_i w_i with w_i the training samples of client i (FedAvg) or, in a
    decentralized combine, the mixing weights W_ij (D-SGD's Σ_j W_ij x_j)."""

    def single(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor
               ) -> torch.Tensor:
        return weighted_mean(rows, weights)

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        return _masked_mean(rows, weights.to(rows.dtype) * _mask(valid, rows))


@register_aggregator("median")
class Median(Aggregator):
    """Coordinate-wise median; the mean of the two middle values for an even count."""

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        values, count = _sorted(rows, valid)
        c = count.long().view(-1, 1, 1).expand(-1, 1, rows.shape[2])
        lo = values.gather(1, (c - 1) // 2)
        hi = values.gather(1, c // 2)
        return ((lo + hi) / 2)[:, 0]


class TrimmedMeanConfig(AggregatorConfig):
    beta: float = Field(0.1, ge=0, lt=0.5, description="β: share of rows trimmed at each end "
                        "per coordinate (⌊β·K⌋ largest and ⌊β·K⌋ smallest dropped)")


@register_aggregator("trimmed_mean", TrimmedMeanConfig)
class TrimmedMean(Aggregator):
    """Per coordinate: drop the ⌊βK⌋ largest and smallest values, average the rest."""

    config: TrimmedMeanConfig

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        values, count = _sorted(rows, valid)
        trim = torch.floor(self.config.beta * count)
        pos = torch.arange(rows.shape[1], device=rows.device, dtype=rows.dtype)
        keep = (pos[None] >= trim[:, None]) & (pos[None] < (count - trim)[:, None])
        values = torch.where(keep[:, :, None], values, 0.0)  # the trimmed ends (and inf pads)
        return values.sum(1) / keep.sum(1, keepdim=True).to(rows.dtype)


class KrumConfig(AggregatorConfig):
    f: int = Field(1, ge=0, description="f: Byzantine rows tolerated; a row's score sums the "
                   "squared distances to its K − f − 2 nearest rows (needs K ≥ f + 3)")


class MultiKrumConfig(KrumConfig):
    m: int = Field(2, ge=1, description="rows with the best Krum scores that are averaged "
                   "(at most K; m = 1 is Krum)")

    def check(self, config: RootView) -> None:
        super().check(config)
        alg = config.algorithm
        cohort = getattr(alg, "cohort", None)
        if alg.kind == "federated" and callable(cohort):
            k = int(cohort(config.data.nodes))
            if self.m > k:
                raise ValueError(f"aggregator.m={self.m} rows averaged out of a cohort of {k} "
                                 "clients: at most the cohort (algorithm.clients_per_round or "
                                 "fraction)")


def krum_scores(rows: torch.Tensor, valid: torch.Tensor | None, f: int) -> torch.Tensor:
    """[G, M] Krum scores: Σ of the squared distances of row i to its c − f − 2 nearest other
    valid rows (c: the group's valid rows); invalid rows score +inf."""
    g, m, _ = rows.shape
    dist = torch.cdist(rows, rows).square()
    eye = torch.eye(m, dtype=torch.bool, device=rows.device)[None]
    ok = ~eye if valid is None else ~eye & valid[:, None, :] & valid[:, :, None]
    dist = torch.where(ok, dist, torch.inf).sort(dim=2).values
    count = torch.full((g,), m, device=rows.device) if valid is None else valid.sum(1)
    k = (count - f - 2).clamp(min=1)
    pos = torch.arange(m, device=rows.device)
    near = pos[None, None, :] < k[:, None, None]
    score = torch.where(near, dist, 0.0).sum(2)
    return score if valid is None else torch.where(valid, score, torch.inf)


@register_aggregator("krum", KrumConfig)
class Krum(Aggregator):
    """The row whose K − f − 2 nearest rows are closest (Blanchard et al. 2017)."""

    config: KrumConfig

    def min_rows(self) -> int:
        return self.config.f + 3

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        best = krum_scores(rows, valid, self.config.f).argmin(1)
        return rows[torch.arange(rows.shape[0], device=rows.device), best]


@register_aggregator("multi_krum", MultiKrumConfig)
class MultiKrum(Krum):
    """The mean of the m rows with the lowest Krum scores (El Mhamdi et al. 2018)."""

    config: MultiKrumConfig

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        score = krum_scores(rows, valid, self.config.f)
        rank = score.argsort(1).argsort(1)
        count = _mask(valid, rows).sum(1, keepdim=True)
        chosen = (rank < count.clamp(max=self.config.m)) & torch.isfinite(score)
        return _masked_mean(rows, chosen.to(rows.dtype))


class CenteredClipConfig(AggregatorConfig):
    tau: float = Field(1.0, gt=0, description="τ: radius (L2, parameter units) each row's "
                       "difference from the running centre is clipped to")
    iterations: int = Field(1, ge=1, description="L: clipping iterations from v = the round's "
                            "start model (the paper's analysis uses L = 1 with momentum)")


@register_aggregator("centered_clip", CenteredClipConfig)
class CenteredClip(Aggregator):
    """v ← v + Σ_i w̄_i clip_τ(x_i − v), L times, from v = center (Karimireddy et al. 2021)."""

    config: CenteredClipConfig

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        w = weights.to(rows.dtype) * _mask(valid, rows)
        w = w / w.sum(1, keepdim=True).clamp_min(1e-30)
        v = center
        for _ in range(self.config.iterations):
            v = v + torch.einsum("gm,gmp->gp", w, _norm_clip(rows - v[:, None], self.config.tau))
        return v


class NormClipConfig(AggregatorConfig):
    tau: float = Field(1.0, gt=0, description="τ: largest L2 norm (parameter units) of a row's "
                       "update x_i − center before the weighted mean")


@register_aggregator("norm_clip", NormClipConfig)
class NormClip(Aggregator):
    """center + Σ_i w̄_i clip_τ(x_i − center) (server-side norm bounding, Sun et al. 2019)."""

    config: NormClipConfig

    def combine(self, rows: torch.Tensor, weights: torch.Tensor, center: torch.Tensor,
                valid: torch.Tensor | None) -> torch.Tensor:
        clipped = _norm_clip(rows - center[:, None], self.config.tau)
        return center + _masked_mean(clipped, weights.to(rows.dtype) * _mask(valid, rows))


def build_aggregator(config: AggregatorConfig, default: str) -> Aggregator:
    """The configured rule, or the algorithm's ``default`` when ``config.name`` is null."""
    name = config.name or default
    cfg = config if config.name else AggregatorConfig(name=name)
    return AGGREGATORS.get(name)(cfg)
