"""Shared machinery of the synchronous federated algorithms.

A round: sample the cohort (from (seed, "cohort", round) only) → every member's job runs on
the virtual clock (download + local training + upload, ``sim.clock.job_time``) → the members
that arrive are aggregated (``aggregate``: the ``aggregator`` seam) → the server optimizer
applies the pseudo-gradient. The round lasts until the last member's job ends (stragglers
cost time). With ``clock.client_dropout`` = p each member drops out with probability p
(Bernoulli keyed by (seed, "client-dropout", round, client)): it still costs its job's time
(the server only learns it is gone when it should have arrived), sends nothing, and the round
aggregates the others; ``clients_dropped`` is recorded per round. With ``clock.deadline_s``
the server waits that long: members whose job takes longer are stragglers, dropped
(``stragglers_dropped``), and the round lasts the deadline. Uploads with NaN/inf values are
rejected by the aggregator (``updates_rejected``). With ``privacy.level: client`` the
aggregation is DP-FedAvg (``fedweave.privacy.client``) and ε is recorded every round.

Each member's job costs what it sends (``member_costs``: bytes each way and the share of the
dense model's compute, e.g. a width-sliced submodel's). With re-drawn bandwidths, shared
server links or per-step compute (``clock.profile``, ``bandwidth_sigma``, ``server_up`` /
``server_down``, ``seconds_per_step``) the round runs on ``sim.clock.FederatedClock`` (one
multicast download, uploads sharing the server's link); otherwise each job takes
``sim.clock.job_time``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from fedweave.aggregators import Aggregator, build_aggregator
from fedweave.algorithms.base import Algorithm, RoundResult
from fedweave.algorithms.federated.sampling import CohortConfig, cohort_size, sample_cohort
from fedweave.algorithms.federated.server import ServerOptConfig, ServerOptimizer
from fedweave.config import AlgorithmConfig
from fedweave.context import RunContext
from fedweave.core.population import Buffers, stack_buffers
from fedweave.core.state import State, section
from fedweave.errors import UserError
from fedweave.privacy.client import ClientLedger, DPFedAvg, poisson_cohort
from fedweave.privacy.sample import SampleLedger
from fedweave.robust.attacks import attack_record, attackers
from fedweave.sim.clock import FederatedClock, client_dropped, job_time
from fedweave.sim.scheduler import Scheduler
from fedweave.sim.traces import online_cohort
from fedweave.training.batches import local_steps
from fedweave.training.protocol import LocalResult


@dataclass
class RoundPlan:
    """Who takes part in a round and how long it lasts on the virtual clock."""

    cohort: torch.Tensor      # [K] sampled clients (CPU)
    arrived: torch.Tensor     # [K] bool: the client's update reaches the server
    duration: float           # virtual seconds until the last member's job ends
    stragglers: int = 0       # members dropped for missing clock.deadline_s
    costs: MemberCosts | None = None

    @property
    def clients(self) -> torch.Tensor:
        """The clients whose updates arrive (CPU)."""
        return self.cohort[self.arrived]


@dataclass
class MemberCosts:
    """What each cohort member's job costs: bytes down and up, and its compute as a share of
    one dense job of the main model (float64 [K] each)."""

    bytes_down: torch.Tensor
    bytes_up: torch.Tensor
    compute: torch.Tensor


class CohortAlgorithm(Algorithm):
    """Rounds of a sampled cohort on the virtual clock, aggregated by the ``aggregator``."""

    config: CohortConfig
    #: the aggregator used when ``aggregator.name`` is null
    default_aggregator: ClassVar[str] = "weighted_mean"
    #: models sent each way per client and round (SCAFFOLD also sends control variates)
    messages: ClassVar[int] = 1
    #: True when ``state()`` keeps the DP-SGD ledger (privacy.level: sample)
    keeps_ledger: ClassVar[bool] = False

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        cfg, n = ctx.config, ctx.data.nodes
        self.fclock = FederatedClock(cfg.clock, n, ctx.seed)
        self.profile = self.fclock.profile
        expected = cohort_size(n, self.config.clients_per_round, self.config.fraction)
        self.ledger: ClientLedger | SampleLedger | None = None
        self.aggregate: Aggregator
        if cfg.privacy.level == "sample":
            if not self.keeps_ledger:
                raise UserError(f"privacy.level=sample: algorithm.name={self.config.name} "
                                "does not checkpoint the privacy ledger")
            self.ledger = SampleLedger(cfg.privacy, cfg.train, ctx.data.sizes)
        if cfg.privacy.level == "client":
            if ctx.init_buffers:  # BatchNorm statistics would be released without noise
                raise UserError("privacy.level=client clips and noises the model update but "
                                "BatchNorm's running statistics would go out unprotected: set "
                                "model.norm=group or none")
            self.aggregate = DPFedAvg(cfg.privacy, expected, ctx.seed)
            self.ledger = ClientLedger(cfg.privacy, n, expected)
        else:
            self.aggregate = build_aggregator(cfg.aggregator, self.default_aggregator)
            self.aggregate.check_rows(expected, f"a cohort of {expected}")
        self.attackers = attackers(cfg.attack, n, ctx.seed)
        self.clock = Scheduler(("arrival",))
        self.last_round = -1  # the round of the latest plan (ε counts releases so far)
        self.offline = 0  # members of the latest round lost offline (device trace)

    # ------------------------------------------------------------------ a round's plan
    def cohort(self, r: int) -> torch.Tensor:
        """The round's cohort of ``data.nodes`` clients (CPU), by count or fraction."""
        n, cfg = self.ctx.data.nodes, self.config
        size = cohort_size(n, cfg.clients_per_round, cfg.fraction)
        avail = self.profile.availability
        if avail is not None:  # a device trace: only clients online now (sim.traces)
            return online_cohort(avail, self.clock, self.ctx.seed, r, size)
        if isinstance(self.ledger, ClientLedger) and self.ctx.config.privacy.sampling == "poisson":
            return poisson_cohort(self.ctx.seed, r, n, size / n)
        return sample_cohort(self.ctx.seed, r, n, size)

    def member_costs(self, r: int, cohort: torch.Tensor) -> MemberCosts:
        """``messages`` dense models each way and one dense job's compute per member."""
        k = len(cohort)
        nbytes = torch.full((k,), float(self.messages * self.ctx.model_bytes),
                            dtype=torch.float64)
        return MemberCosts(nbytes, nbytes.clone(), torch.ones(k, dtype=torch.float64))

    def job_times(self, cohort: torch.Tensor, costs: MemberCosts | None = None, r: int = 0,
                  dropped: list[bool] | None = None) -> torch.Tensor:
        """Virtual seconds of each member's job: download + compute (steps · min(B, n_i)
        samples, times its compute share) + upload (``member_costs``)."""
        cfg = self.ctx.config
        costs = costs or self.member_costs(r, cohort)
        sizes = self.ctx.data.sizes[cohort]
        steps = local_steps(cfg.train, sizes)
        samples = steps * sizes.clamp(max=cfg.train.batch_size)
        if self.fclock.static:
            return torch.as_tensor(job_time(self.profile, cohort, samples.double() * costs.compute,
                                            costs.bytes_down, costs.bytes_up,
                                            cfg.clock.latency_s))
        nodes = cohort.tolist()
        compute = [self.fclock.compute_seconds(i, float(n), float(s), float(c)) for i, n, s, c
                   in zip(nodes, samples.tolist(), steps.tolist(), costs.compute.tolist(),
                          strict=True)]
        start = self.clock.now
        ends = self.fclock.job_arrivals(start, nodes, r, costs.bytes_down.tolist(),
                                        costs.bytes_up.tolist(), compute, dropped)
        return torch.tensor([e - start for e in ends], dtype=torch.float64)

    def plan(self, r: int) -> RoundPlan:
        """Sample the cohort and run its jobs on the scheduler: every member's arrival is an
        event at start + job time; the round ends with the last one."""
        self.last_round = r
        cohort = self.cohort(r)
        clock_cfg, seed = self.ctx.config.clock, self.ctx.seed
        costs = self.member_costs(r, cohort)
        drops = [client_dropped(clock_cfg, seed, r, node) for node in cohort.tolist()]
        times = self.job_times(cohort, costs, r, drops)
        start = self.clock.now
        avail = self.profile.availability
        if avail is not None:  # a client offline when its upload would arrive: lost
            lost = [not avail.online(node, start + float(t))
                    for node, t in zip(cohort.tolist(), times.tolist(), strict=True)]
            self.offline = sum(lost)
            drops = [d or o for d, o in zip(drops, lost, strict=True)]
        for k, (dropped, t) in enumerate(zip(drops, times.tolist(), strict=True)):
            self.clock.at(start + t, "arrival", k, tag=int(dropped), value=t)
        arrivals = [False] * len(cohort)
        duration = 0.0
        deadline = clock_cfg.deadline_s
        late = 0
        while len(self.clock):
            event = self.clock.pop()
            if deadline is not None and event.value > deadline:  # a straggler: dropped
                late += 1
                duration = deadline
                continue
            arrivals[event.node] = not event.tag
            duration = max(duration, event.value)
        arrived = torch.tensor(arrivals, dtype=torch.bool)
        if deadline is not None and late == len(cohort) and r == 0:
            raise UserError(f"clock.deadline_s={deadline:g}: no member of the first cohort "
                            f"finishes in time (the fastest job takes {float(times.min()):.3g} "
                            "virtual s), so the model would never be trained; raise "
                            "clock.deadline_s or remove it")
        self.clock.now = start + duration
        self.aggregate.rejected = 0
        if isinstance(self.aggregate, DPFedAvg):
            self.aggregate.round = r
        return RoundPlan(cohort, arrived, duration, late, costs)

    def result(self, plan: RoundPlan, local: LocalResult) -> RoundResult:
        """The round's record: cohort training stats, bytes (every member downloads, the
        arrived ones upload), virtual time, dropouts and per-client rows."""
        costs = plan.costs or self.member_costs(0, plan.cohort)
        down = int(costs.bytes_down.sum())
        up = int(costs.bytes_up[plan.arrived].sum())
        extras = {}
        cfg = self.ctx.config
        if cfg.clock.client_dropout:
            extras["clients_dropped"] = float((~plan.arrived).sum() - plan.stragglers)
        if cfg.clock.deadline_s is not None:
            extras["stragglers_dropped"] = float(plan.stragglers)
        if self.profile.availability is not None:
            extras["clients_offline"] = float(self.offline)
        if cfg.clock.message_corruption or cfg.attack.active():
            extras["updates_rejected"] = float(self.aggregate.rejected)
        if cfg.attack.active():
            extras["attackers_in_cohort"] = float(self.attackers[plan.clients].sum())
        if isinstance(self.ledger, ClientLedger):
            extras["epsilon"] = self.ledger.update(self.last_round)
        elif self.ledger is not None:
            extras["epsilon"] = self.ledger.update(plan.clients)
        return RoundResult(*local.mean_train(), bytes_up=up, bytes_down=down,
                           sim_time=plan.duration, extras=extras,
                           clients={"client": plan.clients, "train_loss": local.loss.cpu(),
                                    "train_acc": local.acc.cpu()})

    def info(self) -> dict[str, Any]:
        """summary.json: the attackers and the privacy spent (when configured)."""
        cfg, out = self.ctx.config, super().info()
        out.update(attack_record(cfg.attack, self.ctx.data.nodes, cfg.seed))
        if self.ledger is not None:
            out.update(self.ledger.record())
        return out



class FederatedAlgorithm(CohortAlgorithm):
    """One global model (with a server optimizer); a cohort trains from it each round."""

    config: ServerOptConfig
    keeps_ledger = True

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        self.server = ServerOptimizer(ctx.init_params, self.config)
        self.buffers: Buffers = dict(ctx.init_buffers)

    def start(self, k: int) -> tuple[torch.Tensor, Buffers]:
        """The global model and buffers, stacked for ``k`` clients."""
        x = self.server.x.detach()
        return x.expand(k, -1), stack_buffers(self.buffers, k)

    # ------------------------------------------------------------------ records
    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        return self.server.x.detach().unsqueeze(0), stack_buffers(self.buffers, 1), ["global"]

    def state(self) -> State:
        out: State = {"server": self.server.state(), "buffers": self.buffers,
                      "clock": self.clock.state()}
        if isinstance(self.ledger, SampleLedger):
            out["privacy_steps"] = self.ledger.steps
        return out

    def load_state(self, state: State) -> None:
        self.server.load_state(section(state, "server"))
        self.buffers = section(state, "buffers")
        self.clock.load_state(section(state, "clock"))
        if isinstance(self.ledger, SampleLedger):
            self.ledger.steps = state["privacy_steps"].cpu()
