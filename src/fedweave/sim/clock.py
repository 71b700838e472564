"""Node profiles, transfer and job times, fault draws.

Each node has a compute speed (seconds per training sample) and up/down bandwidth (bytes/s).
A local job takes download + compute + upload time; the events they make are processed in
virtual-time order by ``fedweave.sim.scheduler``. Faults (client dropout, lost or late
exchanges) are Bernoulli draws keyed by ``(seed, purpose, round/step, node...)`` through
``fedweave.rng``, so every result depends only on its inputs, never on wall-clock time or call
order.
"""

from __future__ import annotations

import bisect
import csv
import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedweave.config import ClockConfig, read_text
from fedweave.errors import UserError
from fedweave.rng import derive_seed, numpy_rng
from fedweave.sim.traces import Availability, read_trace

MB = 1e6
# PR-FL (reference system 002) defaults, MB/s: per-client bandwidths and the server's.
PRFL_DOWNLOAD = (20.0, 18.0, 12.0, 10.0, 6.0, 4.0, 2.5, 2.0, 2.0, 1.5)
PRFL_UPLOAD = (5.0, 4.0, 3.0, 2.5, 1.5, 1.0, 0.6, 0.5, 0.5, 0.4)
PRFL_SERVER_UP = 10.0 * MB
PRFL_SERVER_DOWN = 50.0 * MB


@dataclass
class NodeProfile:
    """Per-node float64 [n] tensors: compute time per sample (s) and bandwidths (bytes/s);
    ``seconds_per_step`` replaces the per-sample time when the clock counts steps."""

    seconds_per_sample: torch.Tensor
    bandwidth_up: torch.Tensor
    bandwidth_down: torch.Tensor
    seconds_per_step: torch.Tensor | None = None
    #: online windows per node (a JSON device trace, ``fedweave.sim.traces``); None = always
    availability: Availability | None = None


def _vec(values: Any) -> torch.Tensor:
    return torch.as_tensor(values, dtype=torch.float64).clone()


def node_profiles(cfg: ClockConfig, n: int, seed: int) -> NodeProfile:
    """Profiles of ``n`` nodes from ``cfg``, first match wins:

    * ``cfg.trace`` ending in ``.json``: a device trace (``fedweave.sim.traces``: speeds,
      bandwidths and online windows; node i takes device i mod D);
    * ``cfg.trace``: a CSV with header ``node,seconds_per_sample[,bandwidth_up,bandwidth_down]``
      and one row per node 0..n-1 (missing bandwidth columns take ``cfg``'s values);
    * ``cfg.speeds``: relative speed factors s_i, seconds_per_sample_i = cfg.seconds_per_sample/s_i;
    * otherwise s_i = exp(N(0, speed_sigma²)) drawn from ``numpy_rng(seed, "clock-speed")``
      (all equal when ``speed_sigma`` is 0).

    Bandwidths are ``cfg.bandwidth_up`` / ``cfg.bandwidth_down`` for every node unless traced.
    With ``cfg.seconds_per_step`` the profile also holds seconds per step,
    seconds_per_step_i = cfg.seconds_per_step / s_i (a trace gives a ``seconds_per_step``
    column instead of ``seconds_per_sample``).
    """
    up = torch.full((n,), cfg.bandwidth_up, dtype=torch.float64)
    down = torch.full((n,), cfg.bandwidth_down, dtype=torch.float64)
    if cfg.trace is not None and cfg.trace.suffix.lower() == ".json":
        return _json_trace(cfg, n)
    if cfg.trace is not None:
        return _read_trace(cfg.trace, n, up, down, cfg.seconds_per_step is not None)
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
    per_step = None if cfg.seconds_per_step is None else cfg.seconds_per_step / factors
    return NodeProfile(cfg.seconds_per_sample / factors, up, down, per_step)


def _read_trace(path: Path, n: int, up: torch.Tensor, down: torch.Tensor,
                per_step: bool = False) -> NodeProfile:
    text = read_text(path, "clock.trace", "CSV with columns node,seconds_per_sample")
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    unit = "seconds_per_step" if per_step else "seconds_per_sample"
    columns = {unit: torch.zeros(n, dtype=torch.float64)}
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
            f"clock.trace={path}: expected columns node,{unit}"
            "[,bandwidth_up,bandwidth_down] with numbers"
        ) from None
    if len(seen) != n:
        raise UserError(f"clock.trace={path}: has {len(seen)} nodes, data.nodes is {n}")
    if any(bool((v <= 0).any() or not v.isfinite().all()) for v in columns.values()):
        raise UserError(f"clock.trace={path}: times and bandwidths must be positive, finite "
                        "numbers")
    if per_step:
        steps = columns["seconds_per_step"]
        return NodeProfile(torch.ones(n, dtype=torch.float64), up, down, steps)
    return NodeProfile(columns["seconds_per_sample"], up, down)


def _json_trace(cfg: ClockConfig, n: int) -> NodeProfile:
    """Node i follows device i mod D of a JSON device trace (``fedweave.sim.traces``)."""
    assert cfg.trace is not None
    if cfg.seconds_per_step is not None:
        raise UserError(f"clock.trace={cfg.trace} gives seconds per sample; remove "
                        "clock.seconds_per_step")
    trace = read_trace(cfg.trace)
    devices = [trace.devices[i % len(trace.devices)] for i in range(n)]
    return NodeProfile(_vec([d.seconds_per_sample for d in devices]),
                       _vec([d.bandwidth_up for d in devices]),
                       _vec([d.bandwidth_down for d in devices]),
                       availability=Availability.of(trace, n))


def prfl_profiles(n: int = 10, seed: int = 0, seconds_per_sample: float = 1e-3) -> NodeProfile:
    """PR-FL's client bandwidths: download [20,18,12,10,6,4,2.5,2,2,1.5] and
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


def latency_jitter(cfg: ClockConfig, seed: int, step: int, i: int, j: int) -> float:
    """Extra seconds of the message i → j sent at i's ``step``: U(0, cfg.latency_jitter),
    drawn from (seed, "latency-jitter", step, i, j), so each direction of a link has its own
    delay and later messages may overtake earlier ones."""
    if not cfg.latency_jitter:
        return 0.0
    return cfg.latency_jitter * _uniform(seed, "latency-jitter", step, i, j)


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


# ---------------------------------------------------------------------------- federated clients
PRFL_DENSITIES = (1.0, 1.0, 0.6, 0.6, 0.3, 0.3, 0.1, 0.1, 0.1, 0.1)
PRFL_CLIENT_SIGMA = 0.3
PRFL_SERVER_SIGMA = 0.1
DRAWS = 20  # log-normal factors averaged per bandwidth value (PR-FL's get_internet_speed)


def mean_lognormal(rng: np.random.Generator, sigma: float, shape: tuple[int, ...]
                   ) -> np.ndarray:
    """Per entry of ``shape``, the mean of ``DRAWS`` factors exp(N(0, σ²))."""
    return np.exp(rng.normal(0.0, sigma, size=(DRAWS, *shape))).mean(axis=0)


Curve = list[tuple[float, float]]  # (time, bytes done so far), piecewise linear in between


class SharedLink:
    """One direction of the server's link: ``capacity`` bytes/s shared first come, first
    served by concurrent transfers (``None``: unlimited).

    Transfers are requested in time order. Transfer n runs at rate
    min(cap_n, B − used_{<n}(t)): it takes what the transfers requested before it leave, so a
    later transfer never slows an earlier one, and a slow client (cap_n < B) leaves the rest of
    the link to the others. ``used`` is a step function of time (breakpoints ``times``, rate
    ``used[k]`` on [times[k], times[k+1]), 0 after the last), so each transfer's finish time is
    known when it starts. ``send`` returns the transfer's progress curve."""

    def __init__(self, capacity: float | None) -> None:
        self.capacity = capacity
        self.times: list[float] = []
        self.used: list[float] = []

    def _split(self, t: float) -> int:
        """Index k with times[k] == t, inserting a breakpoint there if needed."""
        k = bisect.bisect_left(self.times, t)
        if k < len(self.times) and self.times[k] == t:
            return k
        self.times.insert(k, t)
        self.used.insert(k, self.used[k - 1] if k > 0 else 0.0)
        return k

    def _forget(self, before: float) -> None:
        """Drop the step function before ``before`` (requests come in time order)."""
        while len(self.times) > 1 and self.times[1] <= before:
            del self.times[0], self.used[0]

    def send(self, start: float, nbytes: float, cap: float = math.inf) -> Curve:
        """Progress curve of ``nbytes`` sent from ``start`` at most at ``cap`` bytes/s."""
        if nbytes <= 0:
            return [(start, 0.0), (start, 0.0)]
        if self.capacity is None:
            if math.isinf(cap):
                return [(start, 0.0), (start, float(nbytes))]
            return [(start, 0.0), (start + nbytes / cap, float(nbytes))]
        self._forget(start)
        k = self._split(start)
        t, done, curve = start, 0.0, [(start, 0.0)]
        while True:
            end = self.times[k + 1] if k + 1 < len(self.times) else math.inf
            rate = min(cap, self.capacity - self.used[k])
            if rate > 1e-12 * self.capacity:
                finish = t + (nbytes - done) / rate
                if finish <= end:
                    self._split(finish)
                    self.used[k] += rate
                    curve.append((finish, float(nbytes)))
                    return curve
                self.used[k] += rate
                done += rate * (end - t)
            t, k = end, k + 1
            curve.append((t, done))

    def state(self) -> dict[str, torch.Tensor]:
        return {"times": torch.tensor(self.times, dtype=torch.float64),
                "used": torch.tensor(self.used, dtype=torch.float64)}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.times = [float(t) for t in state["times"].tolist()]
        self.used = [float(u) for u in state["used"].tolist()]


def read_time(curve: Curve, lo: float, hi: float, rate: float) -> float:
    """When a client reading bytes [lo, hi) of a stream with progress ``curve`` at ``rate``
    bytes/s, never ahead of what the stream has sent, has them all:

        max over curve points and the crossings of lo and hi at τ ≤ S⁻¹(hi) of
        τ + (L − clamp(S(τ) − lo, 0, L)) / rate,   L = hi − lo

    (the min-plus convolution of the stream with the client's rate reaching L)."""
    length = hi - lo
    points = list(curve)
    for level in (lo, hi):  # where the stream crosses lo and hi
        for (t0, s0), (t1, s1) in itertools.pairwise(curve):
            if s0 < level < s1:
                points.append((t0 + (t1 - t0) * (level - s0) / (s1 - s0), level))
    t_hi = min(t for t, sent in points if sent >= hi)
    return max(t + (length - min(max(sent - lo, 0.0), length)) / rate
               for t, sent in points if t <= t_hi)


class FederatedClock:
    """Virtual time of federated client jobs.

    A job of client i: download the messages it needs from the server, compute, upload.

    * **bandwidths**: client i's up/down bytes/s are its profile's (``node_profiles``, or
      ``clock.profile: prfl``: PR-FL's means, entry i mod 10), re-drawn for every job
      (``key``: the round of a synchronous run, the client's job index of an asynchronous one)
      as base × the mean of 20 factors exp(N(0, σ²)) from ``numpy_rng(seed,
      "client-bandwidth", key, i)`` when σ = ``clock.bandwidth_sigma`` (prfl: 0.3) > 0;
    * **the server's links** (``clock.server_up`` / ``server_down``; prfl: 10 / 50 MB/s, each
      drawn once per run as the mean of 20 factors with σ 0.1) are ``SharedLink``\\ s: uploads
      of concurrent clients share its download link first come, first served, each at most at
      its own upload rate; a group of clients dispatched together downloads one multicast
      stream of the distinct messages (each sent once) through its upload link, each client
      reading its part at its own rate, never ahead of the stream (``read_time``);
    * **compute**: samples · seconds_per_sample_i, or steps · seconds_per_step_i, times the
      job's compute fraction (a masked or width-sliced model's multiply-adds over the dense
      model's).

    Every transfer starts ``clock.latency_s`` after it is requested.
    """

    def __init__(self, cfg: ClockConfig, n: int, seed: int) -> None:
        self.cfg, self.n, self.seed = cfg, n, seed
        self.profile = node_profiles(cfg, n, seed)
        server_up, server_down = cfg.server_up, cfg.server_down
        self.sigma = cfg.bandwidth_sigma
        if cfg.profile == "prfl":
            self.profile.bandwidth_up = _vec([PRFL_UPLOAD[i % 10] * MB for i in range(n)])
            self.profile.bandwidth_down = _vec([PRFL_DOWNLOAD[i % 10] * MB for i in range(n)])
            self.sigma = PRFL_CLIENT_SIGMA
            factor = mean_lognormal(numpy_rng(seed, "prfl-server"), PRFL_SERVER_SIGMA, (2,))
            server_up = PRFL_SERVER_UP * float(factor[0])
            server_down = PRFL_SERVER_DOWN * float(factor[1])
        self.server_up = SharedLink(server_up)      # carries the clients' downloads
        self.server_down = SharedLink(server_down)  # carries the clients' uploads

    @property
    def static(self) -> bool:
        """No redraws, no shared links, per-sample compute (``job_time`` gives the same)."""
        return (not self.sigma and self.server_up.capacity is None
                and self.server_down.capacity is None and self.profile.seconds_per_step is None)

    def rates(self, node: int, key: int) -> tuple[float, float]:
        """(up, down) bytes/s of ``node``'s job ``key``."""
        up = float(self.profile.bandwidth_up[node])
        down = float(self.profile.bandwidth_down[node])
        if not self.sigma:
            return up, down
        f = mean_lognormal(numpy_rng(self.seed, "client-bandwidth", key, node), self.sigma, (2,))
        return up * float(f[0]), down * float(f[1])

    def compute_seconds(self, node: int, samples: float, steps: float,
                        fraction: float = 1.0) -> float:
        """samples · seconds_per_sample_i (or steps · seconds_per_step_i) · fraction."""
        per_step = self.profile.seconds_per_step
        if per_step is not None:
            return float(steps * per_step[node] * fraction)
        return float(samples * self.profile.seconds_per_sample[node] * fraction)

    def download(self, start: float, nodes: list[int], keys: list[int], stream: list[float],
                 need: list[tuple[float, float]]) -> list[float]:
        """Finish times of a group's downloads: the messages ``stream`` (bytes, in this order)
        go out once through the server's upload link from ``start``; client k reads the bytes
        ``need[k]`` = (lo, hi) of the stream."""
        curve = self.server_up.send(start + self.cfg.latency_s, float(sum(stream)))
        return [read_time(curve, lo, hi, self.rates(node, key)[1])
                for node, key, (lo, hi) in zip(nodes, keys, need, strict=True)]

    def upload(self, start: float, node: int, key: int, nbytes: float,
               shared: bool = True) -> float:
        """Finish time of ``node``'s upload of ``nbytes`` requested at ``start`` (``shared``
        False: not through the server's link, e.g. a client that dropped out)."""
        up = self.rates(node, key)[0]
        if not shared:
            return start + self.cfg.latency_s + nbytes / up
        return self.server_down.send(start + self.cfg.latency_s, nbytes, up)[-1][0]

    def job_arrivals(self, start: float, nodes: list[int], key: int, bytes_down: list[float],
                     bytes_up: list[float], compute: list[float],
                     dropped: list[bool] | None = None) -> list[float]:
        """Arrival times of jobs started together at ``start`` (a synchronous round): one
        multicast of the distinct messages (by size, ascending), local compute, uploads in
        the order their compute ends (ties by position)."""
        sizes = sorted(set(bytes_down))
        offset = dict(zip(sizes, np.cumsum([0.0, *sizes[:-1]]).tolist(), strict=True))
        need = [(offset[b], offset[b] + b) for b in bytes_down]
        got = self.download(start, nodes, [key] * len(nodes), sizes, need)
        ready = [g + c for g, c in zip(got, compute, strict=True)]
        out = [0.0] * len(nodes)
        for k in sorted(range(len(nodes)), key=lambda k: (ready[k], k)):
            out[k] = self.upload(ready[k], nodes[k], key, bytes_up[k],
                                 shared=not (dropped and dropped[k]))
        return out

    def state(self) -> dict[str, Any]:
        return {"server_up": self.server_up.state(), "server_down": self.server_down.state()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.server_up.load_state(state["server_up"])
        self.server_down.load_state(state["server_down"])


# ---------------------------------------------------------------------------- message bytes
def dense_bytes(p: int, value_bytes: int = 4) -> int:
    """A dense model: value_bytes · P."""
    return value_bytes * p


def sparse_upload_bytes(nnz: int, value_bytes: int = 4) -> int:
    """An upload of a masked model: its values only, value_bytes · nnz (the server made the
    mask, so it needs no index)."""
    return value_bytes * nnz


def masked_download_bytes(nnz: int, p: int, value_bytes: int = 4, index: bool = True) -> int:
    """A masked model (or a residual piece) sent to a client: value_bytes · nnz values plus a
    bitmap of ⌈P/8⌉ bytes over all P parameters when the client does not hold that mask yet
    (``index``)."""
    return value_bytes * nnz + (math.ceil(p / 8) if index else 0)
