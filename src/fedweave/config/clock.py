"""The ``clock`` section: the virtual clock of synchronous, asynchronous and peer runs
(speeds, bandwidths, latency, deadlines and faults)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from fedweave.config.base import RootView, Section, changed


class ClockConfig(Section):
    """The virtual clock: per-node compute speed, bandwidth, latency and faults. Simulated
    time is computed from these, never measured."""

    asynchronous: bool = Field(False, description="nodes run on their own clocks (no round "
                               "barrier); asynchronous and decentralized algorithms")
    seconds_per_sample: float = Field(1e-3, gt=0, description="virtual compute time of one "
                                      "training sample on a speed-1 node",
                                      json_schema_extra={"unit": "s"})
    speed_sigma: float = Field(0.0, ge=0, description="log-normal spread of node speeds")
    speeds: list[float] | None = Field(None, description="explicit per-node speed factors")
    trace: Path | None = Field(None, description="CSV with header node,seconds_per_sample"
                               "[,bandwidth_up,bandwidth_down] (overrides the draws), or a "
                               "JSON device trace with online windows (fedweave.sim.traces)")
    bandwidth_up: float = Field(1e9, gt=0, description="upload bandwidth per node",
                                json_schema_extra={"unit": "bytes/s"})
    bandwidth_down: float = Field(1e9, gt=0, description="download bandwidth per node",
                                  json_schema_extra={"unit": "bytes/s"})
    latency_s: float = Field(0.0, ge=0, description="latency added to every transfer",
                             json_schema_extra={"unit": "s"})
    latency_jitter: float = Field(
        0.0, ge=0, description="asynchronous peers: each message's latency gets an extra "
        "U(0, latency_jitter) seconds, drawn per (seed, sender's step, sender, receiver), so "
        "messages arrive out of order", json_schema_extra={"unit": "s"})
    client_dropout: float = Field(0.0, ge=0, lt=1, description="probability a cohort member "
                                  "drops out of a round (federated)")
    link_drop: float = Field(0.0, ge=0, lt=1, description="probability an exchange is lost")
    swap_timeout: float | None = Field(None, gt=0, description="an exchange arriving later than "
                                       "this is dropped", json_schema_extra={"unit": "s"})

    deadline_s: float | None = Field(
        None, gt=0, description="federated rounds: virtual seconds the server waits; members "
        "whose job (download + training + upload) takes longer are stragglers and dropped "
        "(counted as stragglers_dropped); null = wait for everyone")
    message_corruption: float = Field(
        0.0, ge=0, le=1, description="probability that a model a node sends (a client's upload "
        "or a peer message) arrives with NaN values, drawn per (seed, round or step, sender, "
        "receiver); receivers reject non-finite models and count them (updates_rejected, "
        "messages_rejected)")
    corrupt_nodes: list[int] | None = Field(
        None, description="senders whose messages message_corruption can hit; null = every node")
    node_crash: float = Field(
        0.0, ge=0, lt=1, description="decentralized: probability that a running node crashes "
        "at the start of a round (epoch), drawn per (seed, round, node); it neither steps nor "
        "exchanges while down and its neighbours re-normalise their mixing weights")
    crash_rounds: int = Field(1, ge=1, description="rounds a crashed node stays down before it "
                              "rejoins with the model it had when it crashed")
    train_fraction: float = Field(
        1.0, gt=0, le=1, description="asynchronous decentralized runs: share of each node's "
        "epoch period spent training; the rest it is idle (reference system 001's nodes spend "
        "most of it evaluating): period T_i = S·τ_i / train_fraction")
    phase: Literal["zero", "random"] = Field(
        "zero", description="asynchronous decentralized runs: node i starts its first epoch "
        "at 0 or at a seeded phase ~ U(0, T_i) (desynchronised train/idle periods)")

    # federated clients (synchronous and asynchronous): fedweave.sim.clock.FederatedClock
    profile: Literal["custom", "prfl"] = Field(
        "custom", description="federated client profile: custom (the keys above) or prfl "
        "(PR-FL's 10 clients: their mean bandwidths in MB/s, client i takes entry i mod 10, "
        "re-drawn per job as the mean of 20 log-normal draws with sigma 0.3; server up 10 and "
        "down 50 MB/s with sigma 0.1; initial densities for algorithm prfl)")
    seconds_per_step: float | None = Field(
        None, gt=0, description="seconds per local step (at speed factor 1) instead of "
        "seconds_per_sample; speeds/speed_sigma/trace (column seconds_per_step) scale it")
    bandwidth_sigma: float = Field(
        0.0, ge=0, description="federated clients: each job's up/down bandwidth is the "
        "node's bandwidth times the mean of 20 draws exp(N(0, sigma^2)) from the seeded "
        "stream (0 = static)")
    server_up: float | None = Field(
        None, gt=0, description="bytes/s of the server's upload link, shared FIFO by "
        "concurrent downloads (null = unlimited)")
    server_down: float | None = Field(
        None, gt=0, description="bytes/s of the server's download link, shared FIFO by "
        "concurrent uploads (null = unlimited)")

    def check(self, config: RootView) -> None:
        """Clock keys against the algorithm's kind (federated, async, decentralized,
        centralized) and against each other."""
        alg = config.algorithm
        kind = alg.kind
        if self.asynchronous and kind == "async":
            raise ValueError(
                f"clock.asynchronous: algorithm.name={alg.name} is asynchronous by definition "
                "(the switch is for decentralized peers); remove clock.asynchronous")
        if self.asynchronous and not alg.supports_async:
            raise ValueError(
                f"clock.asynchronous: algorithm.name={alg.name} runs synchronous rounds; choose "
                "a decentralized algorithm, an asynchronous federated one (fedasync, fedbuff, "
                "fedfix, prfl: no switch needed), or set clock.asynchronous=false")
        clock_changed = changed(self)
        if kind not in ("federated", "async"):
            for key in ("profile", "seconds_per_step", "bandwidth_sigma", "server_up",
                        "server_down"):
                if key in clock_changed:
                    raise ValueError(f"clock.{key} shapes federated client jobs; "
                                     f"algorithm.name={alg.name} is {kind}")
        if self.profile == "prfl":
            for key in ("bandwidth_up", "bandwidth_down", "bandwidth_sigma", "server_up",
                        "server_down", "trace"):
                if key in clock_changed:
                    raise ValueError(f"clock.{key}: clock.profile=prfl sets the bandwidths; "
                                     "remove one of the two")
        for key in ("link_drop", "swap_timeout"):
            if kind != "decentralized" and key in changed(self):
                raise ValueError(f"clock.{key} is a fault of peer exchanges; algorithm.name="
                                 f"{alg.name} is {kind}")
        for key in ("train_fraction", "phase", "latency_jitter"):
            if key in changed(self) and (kind != "decentralized"
                                         or not self.asynchronous):
                raise ValueError(
                    f"clock.{key} shapes the clocks of asynchronous peers; it "
                    f"needs a decentralized algorithm and clock.asynchronous=true "
                    f"(algorithm.name={alg.name}, asynchronous={self.asynchronous})")
        if self.client_dropout and kind != "federated":
            raise ValueError(
                f"clock.client_dropout applies to federated cohorts; algorithm.name={alg.name} "
                f"is {kind}")
        if self.deadline_s is not None and kind != "federated":
            raise ValueError(f"clock.deadline_s drops federated stragglers; algorithm.name="
                             f"{alg.name} is {kind} (peer exchanges have clock.swap_timeout)")
        for key in ("node_crash", "crash_rounds"):
            if kind != "decentralized" and key in changed(self):
                raise ValueError(f"clock.{key}: node crashes are simulated for decentralized "
                                 f"runs; algorithm.name={alg.name} is {kind}")
        if self.message_corruption and kind == "centralized":
            raise ValueError("clock.message_corruption: the centralized reference sends no "
                             "messages")
        if "corrupt_nodes" in changed(self) and not self.message_corruption:
            raise ValueError("clock.corrupt_nodes needs clock.message_corruption > 0")
