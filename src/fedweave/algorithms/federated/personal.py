"""Shared machinery of the personalised federated methods (FedPer, FedRep, FedBN, LG-FedAvg,
Ditto, pFedMe, Per-FedAvg, APFL).

Per-client state lives in ``fedweave.core.client_store.ClientStore`` rows (the clients seen
so far; a round gathers its cohort's rows and scatters them back), never in Python objects
per client, and goes into ``state()`` for an exact resume. ``personal_models(clients)`` gives
the model each client uses on its own test split (``fedweave.evaluation.personal_test``),
materialising only those clients.

- ``PartialSharing``: one global model of which a fixed set of coordinates (``personal_mask``:
  a head, a body, the normalisation layers) stays on each client. The cohort starts from the
  global shared part and its own stored personal part; the shared part is aggregated (the
  personal coordinates of every upload are set to the global's, so their pseudo-gradient is
  zero and any aggregator or server optimizer applies) and the personal part is stored.
- ``Steps``: the local batch schedule and gradients for methods whose local update is not
  plain SGD on one model (pFedMe's inner problem, Per-FedAvg's meta-step, APFL's two models).

"Head" is the ``algorithm.head`` parameter-name prefix, by default the model's last
``nn.Linear`` (the classifier of every built-in model).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from fedweave.algorithms.base import RoundResult
from fedweave.algorithms.federated.base import FederatedAlgorithm, MemberCosts
from fedweave.algorithms.federated.server import ServerOptConfig
from fedweave.config.base import RootView
from fedweave.context import RunContext
from fedweave.core.client_store import ClientStore
from fedweave.core.population import Buffers, ParamLayout, mean_buffers, stack_buffers
from fedweave.core.state import State, section
from fedweave.errors import UserError
from fedweave.training.batches import batch_schedule, local_steps
from fedweave.training.objectives import L2, Objective, ParamTerm
from fedweave.training.protocol import Batches, LocalResult, StepOutput

NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class PersonalConfig(ServerOptConfig):
    """Keys every personalised method shares. Client-level DP and DP-SGD are refused (the
    personal parts never leave the client, but the accountants cover one global model)."""

    uses_aggregator: ClassVar[bool] = True
    #: True when the local update is the method's own loop (not ``train``'s trainer)
    own_loop: ClassVar[bool] = False

    def check(self, config: RootView) -> None:
        super().check(config)
        if config.privacy.level is not None:
            raise ValueError(f"privacy.level={config.privacy.level}: algorithm.name="
                             f"{self.name} keeps per-client models the privacy accounting does "
                             "not cover; remove the privacy section")
        if self.own_loop and config.launcher.name == "distributed":
            raise ValueError(f"launcher.name=distributed: algorithm.name={self.name} runs its own "
                             "local update in one process; use launcher.name=single")


class HeadConfig(PersonalConfig):
    head: str | None = Field(None, description="parameter-name prefix of the model's head "
                             "(fedper/fedrep: the personal part; lg_fedavg: the shared part); "
                             "null = the model's last Linear layer")


def head_prefix(model: nn.Module, head: str | None) -> str:
    """``head`` or the name of the model's last ``nn.Linear`` (with a trailing dot)."""
    if head is not None:
        return head
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise UserError("algorithm.head: the model has no Linear layer to use as the head; "
                        "set algorithm.head to a parameter-name prefix")
    return f"{linear[-1]}."


def prefix_mask(layout: ParamLayout, prefixes: tuple[str, ...]) -> torch.Tensor:
    """bool ``[P]``: the coordinates of the parameters whose name starts with a prefix."""
    mask = torch.zeros(layout.total, dtype=torch.bool)
    for name, sl in layout.layer_slices():
        if name.startswith(prefixes):
            mask[sl] = True
    return mask


def head_mask(ctx: RunContext, head: str | None) -> torch.Tensor:
    """bool ``[P]`` of the head (``head_prefix``); refused when it is none or all of it."""
    prefix = head_prefix(ctx.model, head)
    mask = prefix_mask(ctx.layout, (prefix,))
    if not bool(mask.any()) or bool(mask.all()):
        names = ", ".join(ctx.layout.names)
        raise UserError(f"algorithm.head={prefix!r} must name some but not all of the model's "
                        f"parameters ({names})")
    return mask


def norm_prefixes(model: nn.Module) -> tuple[str, ...]:
    """Module-name prefixes (trailing dot) of the model's normalisation layers."""
    return tuple(f"{name}." for name, m in model.named_modules() if isinstance(m, NORM_LAYERS))


def refuse_batchnorm(ctx: RunContext, name: str) -> None:
    """One line for methods whose personal models would need their own BatchNorm statistics."""
    if ctx.init_buffers:
        raise UserError(f"model.norm=batch: algorithm.name={name} keeps whole personal models "
                        "but not their BatchNorm statistics; set model.norm=group or none")


@dataclass(frozen=True)
class Freeze(ParamTerm):
    """Keeps the coordinates where ``trainable`` is 0 fixed: their gradient is set to
    −wd·θ, which cancels the optimizer's weight decay (``train.weight_decay``)."""

    trainable: torch.Tensor  # [P] float 0/1
    weight_decay: float = 0.0

    def add_grad(self, g: torch.Tensor, x: torch.Tensor) -> None:
        g.mul_(self.trainable)
        if self.weight_decay:
            g.sub_(x * (1 - self.trainable), alpha=self.weight_decay)


class PersonalModels(FederatedAlgorithm):
    """A global model plus one whole personal model per client seen (Ditto, pFedMe, APFL):
    ``self.store`` holds P (+ ``extra_columns``) floats per client, refuses BatchNorm models
    (their statistics are not kept per client) and is checkpointed with the algorithm."""

    extra_columns: ClassVar[int] = 0

    def __init__(self, ctx: RunContext, config: PersonalConfig) -> None:  # type: ignore[override]
        super().__init__(ctx, config)
        refuse_batchnorm(ctx, config.name)
        x = self.server.x
        self.store = ClientStore(ctx.data.nodes, x.numel() + self.extra_columns, x.dtype,
                                 x.device)

    def state(self) -> State:
        return {**super().state(), "store": self.store.state()}

    def load_state(self, state: State) -> None:
        super().load_state(state)
        self.store.load(section(state, "store"))


class PartialSharing(FederatedAlgorithm):
    """A global model whose ``personal_mask`` coordinates (and, with ``personal_buffers``,
    the normalisation layers' buffers) stay on each client (module docstring)."""

    config: PersonalConfig
    #: True: the buffers of the normalisation layers stay on the client too (FedBN)
    personal_buffers: ClassVar[bool] = False

    def __init__(self, ctx: RunContext, config: PersonalConfig) -> None:  # type: ignore[override]
        super().__init__(ctx, config)
        n, x = ctx.data.nodes, self.server.x
        self.mask = self.personal_mask().to(x.device)
        self.pidx = self.mask.nonzero().squeeze(1)
        self.store = ClientStore(n, len(self.pidx), x.dtype, x.device)
        self.buffer_names = [k for k in self.buffers if self.personal_buffers and
                             k.startswith(norm_prefixes(ctx.model))]
        self.buffer_stores = {k: ClientStore(n, self.buffers[k].numel(), self.buffers[k].dtype,
                                             self.buffers[k].device)
                              for k in self.buffer_names}

    def personal_mask(self) -> torch.Tensor:
        """bool ``[P]``: the coordinates that stay on each client."""
        raise NotImplementedError

    def member_costs(self, r: int, cohort: torch.Tensor) -> MemberCosts:
        """Only the shared coordinates travel."""
        costs = super().member_costs(r, cohort)
        share = 1 - len(self.pidx) / self.ctx.layout.total
        return MemberCosts(costs.bytes_down * share, costs.bytes_up * share, costs.compute)

    def personal_models(self, clients: torch.Tensor) -> tuple[torch.Tensor, Buffers]:
        """The global shared part with each client's stored personal part (the global
        model's values for clients not seen yet)."""
        x = self.server.x.detach()
        params = x.expand(len(clients), -1).clone()
        params[:, self.pidx] = self.store.gather(clients, x[self.pidx])
        buffers = stack_buffers(self.buffers, len(clients))
        for k in self.buffer_names:
            buffers[k] = self.buffer_stores[k].gather(clients, self.buffers[k].reshape(-1)) \
                .view_as(buffers[k])
        return params, buffers

    def local_train(self, r: int, clients: torch.Tensor, params: torch.Tensor,
                    buffers: Buffers) -> LocalResult:
        """The cohort's local update from its personal models (default: the run's local
        SGD on the whole model)."""
        return self.ctx.trainer.train(clients, params, buffers, r, self.ctx.lr(r))

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        plan = self.plan(r)
        clients = plan.clients.to(ctx.device)
        x = self.server.x.detach()
        params, buffers = self.personal_models(clients)
        local = self.local_train(r, clients, params, buffers)
        if len(clients):
            self.store.scatter(clients, local.params[:, self.pidx])
            shared = local.params.clone()
            shared[:, self.pidx] = x[self.pidx]
            delta = x - self.aggregate(shared, local.num_samples, x)
            delta[self.pidx] = 0  # exactly: a mean of equal values may round
            self.server.step(delta)
            for k in self.buffer_names:
                self.buffer_stores[k].scatter(clients, local.buffers[k].reshape(len(clients), -1))
            common = {k: v for k, v in local.buffers.items() if k not in self.buffer_names}
            self.buffers.update(mean_buffers(common, local.num_samples))
        return self.result(plan, local)

    def state(self) -> State:
        return {**super().state(), "store": self.store.state(),
                "buffer_stores": {k: s.state() for k, s in self.buffer_stores.items()}}

    def load_state(self, state: State) -> None:
        super().load_state(state)
        self.store.load(section(state, "store"))
        stores = section(state, "buffer_stores")
        for k, s in self.buffer_stores.items():
            s.load(section(stores, k))


class Steps:
    """A round's batch schedule for a cohort and the engine's gradients on it, for methods
    with their own local loop (same batches as ``LocalTrainer``; ``offset`` draws another
    stream, as round ``key + offset``). ``stats`` sums the data term's loss and accuracy of
    the steps given to ``record`` like the trainer does."""

    def __init__(self, ctx: RunContext, clients: torch.Tensor, r: int, offset: int = 0) -> None:
        cfg = ctx.config.train
        self.ctx, self.clients, self.r = ctx, clients, r
        self.sizes = ctx.data.sizes[clients.cpu()]
        self.steps = local_steps(cfg, self.sizes)
        self.batches: Batches = batch_schedule(
            ctx.data, clients.cpu(), self.steps, cfg.batch_size, (r + offset,),
            shuffle=cfg.epoch_samples is not None)
        dev = ctx.device
        self.steps_dev = self.steps.to(dev)
        self.terms = Objective(terms=(L2(cfg.l2_lambda),) if cfg.l2_lambda else ())
        k = len(clients)
        self.loss = torch.zeros(k, device=dev)
        self.correct = torch.zeros(k, device=dev)
        self.seen = torch.zeros(k, device=dev)

    @property
    def count(self) -> int:
        return int(self.batches.idx.shape[1]) if len(self.clients) else 0

    def active(self, s: int) -> torch.Tensor:
        return self.steps_dev > s

    def grads(self, params: torch.Tensor, buffers: Buffers, s: int, batches: Batches | None = None
              ) -> StepOutput:
        """∇ of the data term (+ ``train.l2_lambda``) of every row on its step-``s`` batch."""
        b = batches or self.batches
        out = self.ctx.local_engine.grads(params, buffers, b.idx[:, s], b.weight[:, s],
                                          self.active(s), (self.r, s), self.clients)
        self.terms.add_param_grads(out.grads, params)
        return out

    def record(self, out: StepOutput, s: int) -> None:
        act = self.active(s).to(self.loss.dtype)
        self.loss += out.loss.to(act) * out.count.to(act) * act
        self.correct += out.correct.to(act) * act
        self.seen += out.count.to(act) * act

    def result(self, params: torch.Tensor, buffers: Buffers) -> LocalResult:
        seen = self.seen.clamp(min=1)
        return LocalResult(params, buffers, self.sizes.to(params.dtype).to(params.device),
                           self.steps, self.loss / seen, self.correct / seen)
