"""ε of a composed subsampled Gaussian mechanism from a maintained accountant (never our own
analysis): Google's ``dp-accounting``, Rényi DP or privacy loss distributions.

    rdp, poisson   RdpAccountant, PoissonSampledDpEvent(q, Gaussian(σ)) (add/remove-one;
                   Mironov et al. 2019)
    rdp, fixed     RdpAccountant(REPLACE_ONE), SampledWithoutReplacementDpEvent(n, m,
                   Gaussian(σ/2)) (Wang, Balle & Kasiviswanathan 2019): under replace-one
                   adjacency the clipped sum's L2 sensitivity is 2C, and the library defines
                   σ relative to the sensitivity, so it gets σ/2
    pld, poisson   PLDAccountant, PoissonSampledDpEvent(q, Gaussian(σ)): numerical composition
                   of privacy loss distributions (Koskela et al. 2020; Doroshenko et al. 2022),
                   tighter than RDP and slower (seconds per evaluation)

The library is the optional extra ``pip install "fedweave[privacy]"``. (Opacus' PRV accountant
plays the role of ``pld``; Opacus 1.6 installs a top-level ``benchmarks`` package into
site-packages, which shadows this repository's ``benchmarks/``, so it is not used.)
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache

from fedweave.config import PrivacyConfig
from fedweave.errors import UserError


def _missing(package: str) -> UserError:
    return UserError(f"privacy accounting needs the {package} package: pip install "
                     "'fedweave[privacy]'")


@lru_cache(maxsize=256)
def _rdp_step(sampling: str, noise_multiplier: float, population: int, sample: int
              ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(orders, RDP of one release) from ``dp_accounting.rdp.RdpAccountant``: composing k
    releases adds k times this vector (what ``compose(event, k)`` does), so one library call
    per setting serves every round."""
    try:
        import dp_accounting
        from dp_accounting.rdp import RdpAccountant
    except ImportError:  # pragma: no cover - the extra is installed in CI
        raise _missing("dp-accounting") from None
    ev = dp_accounting
    if sampling == "poisson":
        acc = RdpAccountant()
        event = ev.PoissonSampledDpEvent(min(sample / population, 1.0),
                                         ev.GaussianDpEvent(noise_multiplier))
    else:
        acc = RdpAccountant(neighboring_relation=ev.NeighboringRelation.REPLACE_ONE)
        event = ev.SampledWithoutReplacementDpEvent(population, sample,
                                                    ev.GaussianDpEvent(noise_multiplier / 2))
    quiet = logging.getLogger("absl")  # "excluding this order" notes for fractional orders
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        acc.compose(event, 1)
    except (ValueError, OverflowError, ZeroDivisionError) as exc:
        raise UserError(f"privacy.noise_multiplier={noise_multiplier:g}: the RDP accountant "
                        f"cannot compute ε for it ({exc}); choose a smaller σ") from None
    finally:
        quiet.setLevel(level)
    return tuple(acc.orders.tolist()), tuple(acc.rdp.tolist())


@lru_cache(maxsize=4096)
def epsilon(accountant: str, sampling: str, noise_multiplier: float, steps: int,
            delta: float, population: int, sample: int) -> float:
    """ε at ``delta`` after ``steps`` subsampled Gaussian releases: each draws ``sample`` of
    ``population`` records (fixed) or each record with q = sample/population (poisson), noise
    std = σ·C on the sum of records clipped to C. 0 for no step, ∞ without noise."""
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    if accountant == "pld":
        try:
            import dp_accounting
            from dp_accounting.pld import PLDAccountant
        except ImportError:  # pragma: no cover
            raise _missing("dp-accounting") from None
        acc = PLDAccountant()
        acc.compose(dp_accounting.PoissonSampledDpEvent(
            min(sample / population, 1.0), dp_accounting.GaussianDpEvent(noise_multiplier)),
            steps)
        return float(acc.get_epsilon(delta))
    from dp_accounting.rdp import compute_epsilon

    orders, rdp = _rdp_step(sampling, noise_multiplier, population, sample)
    absl = logging.getLogger("absl")  # one "negative Rényi divergence" line per order and
    level = absl.level                # round when σ is so large that RDP rounds below 0
    absl.setLevel(logging.ERROR)
    try:
        value = float(compute_epsilon(orders, [steps * r for r in rdp], delta)[0])
    finally:
        absl.setLevel(level)
    if any(r < 0 for r in rdp) and noise_multiplier not in _ROUNDED:
        _ROUNDED.add(noise_multiplier)
        logging.getLogger("fedweave").warning(
            "privacy.noise_multiplier=%g is so large that the accountant's Rényi divergences "
            "round below zero: ε is reported as %g", noise_multiplier, value)
    return value


#: noise multipliers whose rounding was reported (once per process)
_ROUNDED: set[float] = set()


def check_target(privacy: PrivacyConfig, first: float) -> None:
    """A target ε that even the first round exceeds is refused before the run starts."""
    target = privacy.target_epsilon
    if target is not None and first > target:
        raise UserError(f"privacy.target_epsilon={target}: one round already spends "
                        f"ε={first:.3g}; raise the target or privacy.noise_multiplier")
