"""Device traces for the virtual clock: per-device compute speed, bandwidth and availability.

**Format** (``clock.trace: path.json``)::

    {"format": "fedweave-trace/1",
     "period": 604800,                  # optional: availability repeats every period seconds
     "devices": [
        {"seconds_per_sample": 0.012,    # compute (s per training sample at speed 1)
         "bandwidth_up": 250000.0,       # bytes/s
         "bandwidth_down": 1000000.0,    # bytes/s
         "available": [[0, 3600], [7200, 9000]]},   # optional: online windows [start, end) s
        ...]}

Client i of the run uses device ``i mod D``. A device without ``available`` is always online;
with it, the device is online at virtual time t iff t' = t mod ``period`` (t itself without a
period) lies in one of its windows, as FedScale's ``Client.isActive`` reads its behaviour
trace. Offline clients are not sampled (synchronous cohorts, asynchronous dispatches), and a
job whose upload arrives while its client is offline is lost (``clients_offline``); both
kinds of method read the same trace through :class:`Availability`. Decentralized peers read
it too (``fedweave.algorithms.decentralized.availability``): a synchronous round skips the
nodes offline at its start; an asynchronous node's own clock runs only while it is online
(``Availability.online_clock``) and a message needs both its ends online when it is sent and
when it arrives. (The CSV trace of
``fedweave.sim.clock.node_profiles``, one row per node, is still read for speeds and
bandwidths; it has no availability.)

**FedScale** (Lai et al. 2022, "FedScale: Benchmarking Model and System Performance of
Federated Learning at Scale") publishes ``client_device_capacity`` ({client id:
{"computation": ms per sample, "communication": kbit/s}}) and ``client_behave_trace``
({client id: {"active": [s...], "inactive": [s...], "finish_time": s, ...}}) as pickles.
:func:`convert_fedscale` reads them with the restricted unpickler of
``fedweave.data.sources.cifar`` (builtin containers, numbers, strings and numpy arrays only:
a pickle naming any other global is refused before it is looked up, so no code runs) or from
a JSON export of the same dicts, and writes the format above:
seconds_per_sample = 3 · computation / 1000 (FedScale's ``augmentation_factor`` 3 for
forward + backward), bandwidth up = down = communication · 1024 / 8 bytes/s (FedScale's kbit
is 1024 bits), windows = zip(active, inactive), period = finish_time (the largest one).
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from fedweave.errors import UserError
from fedweave.rng import numpy_rng
from fedweave.sim.scheduler import EPS

FORMAT = "fedweave-trace/1"
AUGMENTATION = 3.0  # FedScale's compute factor (forward + backward ≈ 3 forwards)


@dataclass
class Device:
    seconds_per_sample: float
    bandwidth_up: float
    bandwidth_down: float
    available: list[tuple[float, float]] | None = None


@dataclass
class DeviceTrace:
    devices: list[Device]
    period: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT}
        if self.period is not None:
            out["period"] = self.period
        rows = []
        for d in self.devices:
            row: dict[str, Any] = {"seconds_per_sample": d.seconds_per_sample,
                                   "bandwidth_up": d.bandwidth_up,
                                   "bandwidth_down": d.bandwidth_down}
            if d.available is not None:
                row["available"] = [[s, e] for s, e in d.available]
            rows.append(row)
        out["devices"] = rows
        return out


def _number(value: Any, what: str, path: Path, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or (value <= 0 if positive else value < 0):
        kind = "positive" if positive else "non-negative"
        raise UserError(f"clock.trace={path}: {what} must be a {kind} finite number, "
                        f"found {value!r}")
    return float(value)


def read_trace(path: Path) -> DeviceTrace:
    """A trace in the JSON format of the module docstring; anything malformed is a one-line
    :class:`UserError` naming the file and the entry."""
    try:
        blob = json.loads(Path(path).read_bytes())
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"clock.trace={path}: not a readable JSON trace ({e})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT \
            or not isinstance(blob.get("devices"), list) or not blob["devices"]:
        raise UserError(f"clock.trace={path}: expected {{\"format\": \"{FORMAT}\", "
                        "\"devices\": [...]}} with at least one device")
    period = blob.get("period")
    if period is not None:
        period = _number(period, "period", path)
    devices = []
    for k, row in enumerate(blob["devices"]):
        if not isinstance(row, dict):
            raise UserError(f"clock.trace={path}: device {k} is not an object")
        try:
            speed = _number(row["seconds_per_sample"], f"device {k} seconds_per_sample", path)
            up = _number(row["bandwidth_up"], f"device {k} bandwidth_up", path)
            down = _number(row["bandwidth_down"], f"device {k} bandwidth_down", path)
        except KeyError as e:
            raise UserError(f"clock.trace={path}: device {k} has no {e.args[0]}") from None
        windows = row.get("available")
        if windows is not None:
            windows = _windows(windows, f"device {k} available", path)
        devices.append(Device(speed, up, down, windows))
    return DeviceTrace(devices, period)


def _windows(value: Any, what: str, path: Path) -> list[tuple[float, float]]:
    if not isinstance(value, list) or not all(isinstance(w, list) and len(w) == 2
                                              for w in value):
        raise UserError(f"clock.trace={path}: {what} must be a list of [start, end] pairs")
    out = [(_number(s, what, path, False), _number(e, what, path, False)) for s, e in value]
    if any(e <= s for s, e in out) or any(b[0] < a[1] for a, b in itertools.pairwise(out)):
        raise UserError(f"clock.trace={path}: {what}: windows must have start < end and be "
                        "sorted without overlap")
    return out


@dataclass
class Availability:
    """When each of ``n`` clients is online: client i follows device i mod D."""

    windows: list[list[tuple[float, float]] | None]
    period: float | None = None
    _starts: list[list[float] | None] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._starts = [None if w is None else [s for s, _ in w] for w in self.windows]

    @classmethod
    def of(cls, trace: DeviceTrace, n: int) -> Availability | None:
        """The availability of ``n`` clients, or None when every device is always online."""
        if all(d.available is None for d in trace.devices):
            return None
        d = len(trace.devices)
        return cls([trace.devices[i % d].available for i in range(n)], trace.period)

    def online(self, node: int, t: float) -> bool:
        """Whether ``node`` is online at virtual time ``t``."""
        windows, starts = self.windows[node], self._starts[node]
        if windows is None or starts is None:
            return True
        if self.period is not None:
            t = t % self.period
        k = bisect.bisect_right(starts, t) - 1
        return k >= 0 and t < windows[k][1]

    def online_nodes(self, t: float) -> list[int]:
        return [i for i in range(len(self.windows)) if self.online(i, t)]

    def next_online(self, t: float) -> float:
        """The earliest time ≥ t at which some client is online (inf if none ever is)."""
        return min((self.node_next_online(i, t) for i in range(len(self.windows))),
                   default=math.inf)

    def node_next_online(self, node: int, t: float) -> float:
        """The earliest time ≥ t at which ``node`` is online (inf if it never is again)."""
        windows = self.windows[node]
        if windows is None:
            return t
        base = 0.0
        tt = t
        if self.period is not None:
            base = math.floor(t / self.period) * self.period
            tt = t - base
        for s, e in windows:
            if tt < e:
                return base + max(s, tt)
        if self.period is not None and windows:
            return base + self.period + windows[0][0]
        return math.inf

    def online_near(self, node: int, t: float) -> bool:
        """Online at ``t`` or at t·(1 + EPS): instants the scheduler takes together
        (``fedweave.sim.scheduler.EPS``) count as one."""
        return self.online(node, t) or self.online(node, t * (1 + EPS))

    def _spans(self, node: int) -> tuple[list[tuple[float, float]], list[float], float]:
        """``node``'s windows within one period (clipped to [0, period)), the online seconds
        before each, and their total."""
        windows = self.windows[node] or []
        if self.period is not None:
            windows = [(s, min(e, self.period)) for s, e in windows if s < self.period]
        cum = [0.0]
        for s, e in windows:
            cum.append(cum[-1] + (e - s))
        return windows, cum[:-1], cum[-1]

    def online_clock(self, node: int, u: float) -> float:
        """The virtual time at which ``node`` has been online for ``u`` seconds since 0:

            A_i(t) = |[0, t] ∩ online_i|,   A_i⁻¹(u) = inf{t : A_i(t) > u}

        (``u`` itself for an always-online node, inf when it is never online that long). A
        node's own clock runs only while it is online, so an instant u of that clock that
        falls on a window's end lands on the next window's start."""
        if self.windows[node] is None:
            return u
        spans, cum, total = self._spans(node)
        if total <= 0 or (self.period is None and u >= total):
            return math.inf
        cycles, r = 0, u
        if self.period is not None:
            cycles = math.floor(u / total)
            r = u - cycles * total
            if r >= total:  # float rounding of the division
                cycles, r = cycles + 1, r - total
            r = max(r, 0.0)
        k = bisect.bisect_right(cum, r) - 1
        base = cycles * self.period if cycles and self.period is not None else 0.0
        t = base + spans[k][0] + (r - cum[k])
        for _ in range(8):  # a rounding just before the window's start
            if self.online(node, t):
                return t
            t = math.nextafter(t, math.inf)
        return self.node_next_online(node, t)  # a rounding onto the window's end


class Clock(Protocol):
    now: float


def wait_until_online(avail: Availability, clock: Clock, who: str) -> list[int]:
    """The clients (``who``: "client" or "node") online at ``clock.now``; when none is, at the
    first instant one is (``clock.now`` moves there). No one ever online again is a one-line
    :class:`UserError`."""
    online = avail.online_nodes(clock.now)
    if online:
        return online
    later = avail.next_online(clock.now)
    if math.isinf(later):
        raise UserError(f"clock.trace: no {who} is ever online again; give the devices "
                        "later windows or a period")
    for _ in range(8):  # a start time rounded just before its window
        online = avail.online_nodes(later)
        if online:
            break
        later = math.nextafter(later, math.inf)
    clock.now = later
    return online


def online_cohort(avail: Availability, clock: Clock, seed: int, round_index: int,
                  size: int) -> torch.Tensor:
    """A synchronous round's cohort under a device trace: min(size, online) clients drawn
    without replacement from those online at ``clock.now`` (stream (seed, "cohort", round));
    when none is online the round starts later, at the first instant one is (``clock.now``
    moves there)."""
    online = wait_until_online(avail, clock, "client")
    if size >= len(online):
        return torch.tensor(online, dtype=torch.int64)
    pick = numpy_rng(seed, "cohort", round_index).choice(len(online), size, replace=False)
    return torch.tensor(sorted(online[int(k)] for k in pick), dtype=torch.int64)


# ----------------------------------------------------------------------------- FedScale
def _load_plain(path: Path) -> Any:
    """A FedScale trace file: JSON (``.json``), else a pickle read with the restricted
    unpickler (plain data only)."""
    if path.suffix == ".json":
        try:
            return json.loads(path.read_bytes())
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: not readable JSON ({e})") from None
    from fedweave.data.sources.cifar import safe_unpickle

    return safe_unpickle(path, "export it again from FedScale's benchmark/dataset/data")


def _key(k: Any) -> str:
    return k.decode() if isinstance(k, bytes) else str(k)


def _field(entry: Any, name: str, path: Path, client: str) -> Any:
    if not isinstance(entry, Mapping):
        raise UserError(f"{path}: client {client} is not a dict")
    for k, v in entry.items():
        if _key(k) == name:
            return v
    raise UserError(f"{path}: client {client} has no {name!r}")


def _sort_key(client: str) -> tuple[int, int | str]:
    return (0, int(client)) if client.isdigit() else (1, client)


def convert_fedscale(device_file: Path, behave_file: Path | None = None,
                     limit: int | None = None) -> DeviceTrace:
    """A :class:`DeviceTrace` from FedScale's ``client_device_capacity`` and (optionally)
    ``client_behave_trace`` (pickles or JSON exports; see the module docstring). Devices are
    the capacity file's clients in id order (``limit``: the first ones); client k's
    availability is the behaviour trace's k-th client in id order (FedScale pairs them the
    same way, by position)."""
    capacity = _load_plain(device_file)
    if not isinstance(capacity, Mapping) or not capacity:
        raise UserError(f"{device_file}: expected a non-empty dict {{client: {{'computation', "
                        "'communication'}}}}")
    clients = sorted((_key(k) for k in capacity), key=_sort_key)
    by_key = {_key(k): v for k, v in capacity.items()}
    if limit is not None:
        clients = clients[:limit]
    behave: list[Any] = []
    period = None
    if behave_file is not None:
        raw = _load_plain(behave_file)
        if not isinstance(raw, Mapping) or not raw:
            raise UserError(f"{behave_file}: expected a non-empty dict {{client: {{'active', "
                            "'inactive', 'finish_time'}}}}")
        ordered = sorted(((_key(k), v) for k, v in raw.items()), key=lambda kv: _sort_key(kv[0]))
        behave = [v for _, v in ordered]
        finishes = [float(_field(v, "finish_time", behave_file, c)) for c, v in ordered]
        period = max(finishes)
    devices = []
    for k, client in enumerate(clients):
        entry = by_key[client]
        compute = float(_field(entry, "computation", device_file, client))
        kbps = float(_field(entry, "communication", device_file, client))
        if not (compute > 0 and kbps > 0 and math.isfinite(compute) and math.isfinite(kbps)):
            raise UserError(f"{device_file}: client {client}: computation and communication "
                            "must be positive numbers")
        bandwidth = kbps * 1024 / 8
        windows = None
        if behave:
            b = behave[k % len(behave)]
            active = np.asarray(_field(b, "active", behave_file or device_file, client), float)
            inactive = np.asarray(_field(b, "inactive", behave_file or device_file, client),
                                  float)
            n = min(len(active), len(inactive))
            windows = [(float(s), float(e)) for s, e in zip(active[:n], inactive[:n],
                                                            strict=True) if e > s]
        devices.append(Device(AUGMENTATION * compute / 1000.0, bandwidth, bandwidth, windows))
    return DeviceTrace(devices, period)


def write_trace(trace: DeviceTrace, path: Path) -> None:
    """Write ``trace`` as JSON (atomically: a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(trace.to_json(), indent=None, separators=(",", ":")) + "\n")
    tmp.replace(path)


def example_trace(devices: int = 300, seed: int = 0, day: float = 86400.0) -> DeviceTrace:
    """The shipped example (``configs/traces/example-300.json``), drawn from a seeded
    distribution (``numpy_rng(seed, "example-trace")``), not measured:

    * compute: seconds_per_sample = 3 · c / 1000 with c ~ LogNormal(ln 60, 0.8) ms, the
      lognormal FedScale's own device profiles follow roughly (median 60 ms per sample);
    * bandwidth: up = down = kbps · 128 bytes/s, kbps ~ LogNormal(ln 8000, 1.0) (8 Mbit/s
      median);
    * availability over one day (the period): 1–4 windows per device, each starting
      uniformly in the day and lasting LogNormal(ln 3600, 0.7) s (clipped to the day, merged
      when they overlap); 10% of the devices are always online."""
    rng = numpy_rng(seed, "example-trace")
    out = []
    for _ in range(devices):
        compute = float(rng.lognormal(math.log(60.0), 0.8))
        kbps = float(rng.lognormal(math.log(8000.0), 1.0))
        windows: list[tuple[float, float]] | None = None
        if rng.random() >= 0.1:
            spans = []
            for _ in range(int(rng.integers(1, 5))):
                start = float(rng.uniform(0.0, day))
                end = min(day, start + float(rng.lognormal(math.log(3600.0), 0.7)))
                spans.append((round(start, 1), round(end, 1)))
            spans.sort()
            windows = []
            for s, e in spans:
                if windows and s <= windows[-1][1]:
                    windows[-1] = (windows[-1][0], max(windows[-1][1], e))
                elif e > s:
                    windows.append((s, e))
        out.append(Device(round(AUGMENTATION * compute / 1000.0, 6), round(kbps * 128, 1),
                          round(kbps * 128, 1), windows))
    return DeviceTrace(out, day)
