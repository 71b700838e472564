"""Node profiles, transfer and job times, fault draws (REFERENCE §2, DESIGN §3 Clock).

Each node has a compute speed (seconds per training sample) and up/down bandwidth (bytes/s).
A local job takes download + compute + upload time; the events they make are processed in
virtual-time order by ``fedweave.sim.scheduler``. Faults (client dropout, lost or late
exchanges) are Bernoulli draws keyed by ``(seed, purpose, round/step, node...)`` through
``fedweave.rng``, so every result depends only on its inputs, never on wall-clock time or call
order.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedweave.config import ClockConfig, read_text
from fedweave.errors import UserError
from fedweave.rng import derive_seed, numpy_rng

MB = 1e6
# PR-FL (seed 002) defaults, MB/s: per-client bandwidths and the server's.
PRFL_DOWNLOAD = (20.0, 18.0, 12.0, 10.0, 6.0, 4.0, 2.5, 2.0, 2.0, 1.5)
PRFL_UPLOAD = (5.0, 4.0, 3.0, 2.5, 1.5, 1.0, 0.6, 0.5, 0.5, 0.4)
PRFL_SERVER_UP = 10.0 * MB
PRFL_SERVER_DOWN = 50.0 * MB


@dataclass
class NodeProfile:
    """Per-node float64 [n] tensors: compute time per sample (s) and bandwidths (bytes/s)."""

    seconds_per_sample: torch.Tensor
    bandwidth_up: torch.Tensor
    bandwidth_down: torch.Tensor


def _vec(values: Any) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).clone()


def node_profiles(cfg: ClockConfig, n: int, seed: int) -> NodeProfile:
    """Profiles of ``n`` nodes from ``cfg``, first match wins:

    * ``cfg.trace``: a CSV with header ``node,seconds_per_sample[,bandwidth_up,bandwidth_down]``
      and one row per node 0..n-1 (missing bandwidth columns take ``cfg``'s values);
    * ``cfg.speeds``: relative speed factors s_i, seconds_per_sample_i = cfg.seconds_per_sample/s_i;
    * otherwise s_i = exp(N(0, speed_sigma²)) drawn from ``numpy_rng(seed, "clock-speed")``
      (all equal when ``speed_sigma`` is 0).

    Bandwidths are ``cfg.bandwidth_up`` / ``cfg.bandwidth_down`` for every node unless traced.
    """
    up = torch.full((n,), cfg.bandwidth_up, dtype=torch.float64)
    down = torch.full((n,), cfg.bandwidth_down, dtype=torch.float64)
    if cfg.trace is not None:
        return _read_trace(cfg.trace, n, up, down)
    if cfg.speeds is not None:
        if len(cfg.speeds) != n:
            raise UserError(
                f"clock.speeds has {len(cfg.speeds)} entries but data.nodes is {n}; "
                "give one speed factor per node"
            )
        if min(cfg.speeds) <= 0:
            raise UserError("clock.speeds: every speed factor must be positive")
        factors = _vec(cfg.speeds)
    elif cfg.speed_sigma > 0:
        factors = _vec(np.exp(numpy_rng(seed, "clock-speed").normal(0.0, cfg.speed_sigma, n)))
    else:
        factors = torch.ones(n, dtype=torch.float64)
    return NodeProfile(cfg.seconds_per_sample / factors, up, down)


def _read_trace(path: Path, n: int, up: torch.Tensor, down: torch.Tensor) -> NodeProfile:
    text = read_text(path, "clock.trace", "CSV with columns node,seconds_per_sample")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    columns = {"seconds_per_sample": torch.zeros(n, dtype=torch.float64)}
    if rows and "bandwidth_up" in rows[0]:
        columns["bandwidth_up"] = up
    if rows and "bandwidth_down" in rows[0]:
        columns["bandwidth_down"] = down
    seen = set()
    try:
        for row in rows:
            node = int(row["node"])
            if not 0 <= node < n or node in seen:
                raise UserError(f"clock.trace={path}: node {node} is repeated or not in 0..{n - 1}")
            seen.add(node)
            for name, values in columns.items():
                values[node] = float(row[name])
    except (KeyError, TypeError, ValueError):
        raise UserError(
            f"clock.trace={path}: expected columns node,seconds_per_sample"
            "[,bandwidth_up,bandwidth_down] with numbers"
        ) from None
    if len(seen) != n:
        raise UserError(f"clock.trace={path}: has {len(seen)} nodes, data.nodes is {n}")
    if any(bool((v <= 0).any() or not v.isfinite().all()) for v in columns.values()):
        raise UserError(f"clock.trace={path}: times and bandwidths must be positive, finite "
                        "numbers")
    return NodeProfile(columns["seconds_per_sample"], up, down)


def prfl_profiles(n: int = 10, seed: int = 0, seconds_per_sample: float = 1e-3) -> NodeProfile:
    """PR-FL's client bandwidths (REFERENCE §2): download [20,18,12,10,6,4,2.5,2,2,1.5] and
    upload [5,4,3,2.5,1.5,1,.6,.5,.5,.4] MB/s, node i taking entry i mod 10; each value is the
    mean of 20 log-normal draws b·exp(N(0, 0.3²)) from ``numpy_rng(seed, "prfl-bandwidth")``.
    Compute speed is ``seconds_per_sample`` for every node."""
    rng = numpy_rng(seed, "prfl-bandwidth")
    base = np.array([[PRFL_UPLOAD[i % 10], PRFL_DOWNLOAD[i % 10]] for i in range(n)]) * MB
    draws = base * np.exp(rng.normal(0.0, 0.3, size=(20, n, 2))).mean(axis=0)
    return NodeProfile(
        torch.full((n,), seconds_per_sample, dtype=torch.float64),
        _vec(draws[:, 0]),
        _vec(draws[:, 1]),
    )


def transfer_time(nbytes: Any, bandwidth: Any, latency_s: float = 0.0) -> Any:
    """Seconds to move ``nbytes`` at ``bandwidth`` bytes/s: latency_s + nbytes / bandwidth."""
    return latency_s + nbytes / bandwidth


def job_time(
    profile: NodeProfile,
    node: int | torch.Tensor,
    samples: Any,
    bytes_down: Any,
    bytes_up: Any,
    latency_s: float = 0.0,
) -> float | torch.Tensor:
    """Seconds for one local job of ``node`` (an index or a tensor of indices):

    (latency + bytes_down / down_i) + samples · seconds_per_sample_i + (latency + bytes_up / up_i).
    A float for an int ``node``, else a float64 tensor.
    """
    total = (
        transfer_time(bytes_down, profile.bandwidth_down[node], latency_s)
        + samples * profile.seconds_per_sample[node]
        + transfer_time(bytes_up, profile.bandwidth_up[node], latency_s)
    )
    return float(total) if isinstance(node, int) else total


def epoch_phases(cfg: ClockConfig, seed: int, periods: torch.Tensor) -> torch.Tensor:
    """float64 [n] start of each node's first epoch period: 0 (``clock.phase: zero``) or
    φ_i ~ U(0, T_i) from ``numpy_rng(seed, "clock-phase")`` (``random``), T_i = ``periods``."""
    if cfg.phase == "zero":
        return torch.zeros_like(periods, dtype=torch.float64)
    u = numpy_rng(seed, "clock-phase").uniform(0.0, 1.0, len(periods))
    return _vec(u) * periods.to(torch.float64)


def _uniform(seed: int, purpose: str, *keys: int) -> float:
    """A U[0, 1) draw that depends only on ``(seed, purpose, keys)``."""
    return derive_seed(seed, purpose, *keys) / 2**63


def client_dropped(cfg: ClockConfig, seed: int, round: int, node: int) -> bool:
    """Whether ``node`` drops out of ``round``: Bernoulli(cfg.client_dropout)."""
    return _uniform(seed, "client-dropout", round, node) < cfg.client_dropout


def link_dropped(cfg: ClockConfig, seed: int, step: int, i: int, j: int) -> bool:
    """Whether the exchange on edge {i, j} at ``step`` is lost: Bernoulli(cfg.link_drop),
    the same draw for (i, j) and (j, i)."""
    return _uniform(seed, "link", step, min(i, j), max(i, j)) < cfg.link_drop


def exchange_late(
    cfg: ClockConfig, profile: NodeProfile, step: int, i: int, j: int, nbytes: float
) -> bool:
    """Whether swapping ``nbytes`` each way between i and j exceeds ``cfg.swap_timeout``:
    latency_s + nbytes / min(up_i, down_i, up_j, down_j) > swap_timeout (never without a
    timeout). Profiles are static, so the answer is the same at every ``step``."""
    if cfg.swap_timeout is None:
        return False
    slowest = min(
        float(profile.bandwidth_up[i]),
        float(profile.bandwidth_down[i]),
        float(profile.bandwidth_up[j]),
        float(profile.bandwidth_down[j]),
    )
    return transfer_time(nbytes, slowest, cfg.latency_s) > cfg.swap_timeout
