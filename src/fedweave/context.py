"""The run context: everything an algorithm works with, built once per process.

``build_context(config)`` resolves the device (``cuda:<LOCAL_RANK>`` under torchrun), joins the
process group when the run is distributed, loads and partitions the data, builds the initial
model (seeded from (seed, "init")) and decides the gradient engine once (``engine.name``:
measured by ``training.select`` for ``auto``, agreed on rank 0's choice across processes, or
the backend recorded by the run being resumed). Nothing is rebuilt afterwards: the engine that
calibration built for the chosen backend is the run's engine.

The local trainer is a chain of wrappers, assembled in one place, ``assemble_trainer``: the
engine, privatised per sample under DP-SGD (``privacy.level: sample``), shared across ranks
under the distributed engine, and the attackers' uploads (``attack``) around the trainer.
Every shape, and ``RunContext.with_data`` (leave-one-out retraining), goes through it.

A run may hold models of several shapes (HeteroFL's width-sliced submodels, a student that
differs from its teachers): each is a ``ModelShape`` (template module, parameter layout,
initial state, gradient engine, local trainer), made on demand by ``RunContext.shape``. The
``main`` shape is the one of ``config.model``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fedweave.config import Config, ModelConfig
from fedweave.core.population import Buffers, ParamLayout, flat_params, model_buffers
from fedweave.data.federated import FederatedData
from fedweave.data.ondemand import build_data
from fedweave.distributed import under_torchrun
from fedweave.distributed.process_group import Comm, init_comm, local_device
from fedweave.distributed.trainer import DistributedGradientEngine, DistributedTrainer
from fedweave.models import build_model, uses_batchnorm
from fedweave.privacy.sample import SampleDPEngine
from fedweave.rng import derive_seed
from fedweave.robust.attacks import uplink
from fedweave.robust.data import corrupt_data
from fedweave.training.chunks import chunk_width
from fedweave.training.optim import scheduled_lr
from fedweave.training.protocol import GradientEngine
from fedweave.training.select import BACKENDS, build_engine, choose_backend, resolve_device
from fedweave.training.threads import apply_threads, choose_threads, cores, step_flops
from fedweave.training.trainer import LocalTrainer
from fedweave.training.workers import set_workers


@dataclass
class ModelShape:
    """One architecture of a run and the machinery to train it."""

    name: str
    model_config: ModelConfig
    model: nn.Module
    layout: ParamLayout
    init_params: torch.Tensor   # [P]
    init_buffers: Buffers       # {name: tensor} of one model
    engine: GradientEngine      # distributed wrapper when the run is distributed
    local_engine: GradientEngine
    trainer: LocalTrainer

    @property
    def model_bytes(self) -> int:
        """Bytes of one dense model's parameters."""
        return self.layout.total * self.init_params.element_size()


class RunContext:
    """Config, data, device, process group, the engine decision and the model shapes."""

    def __init__(self, config: Config, data: FederatedData, device: torch.device,
                 comm: Comm | None, backend: str, calibration: dict[str, Any],
                 model: nn.Module | None = None, engine: GradientEngine | None = None
                 ) -> None:
        self.config, self.data, self.device, self.comm = config, data, device, comm
        self.backend, self.calibration = backend, calibration
        #: torch threads of this process and why (``training.threads``; summary.json)
        self.threads: dict[str, Any] = {}
        #: rows per batched kernel call (``training.chunks``): a function of the config and the
        #: device only, so every process computes identical rows
        self.chunk = chunk_width(config.engine.chunk, stepping_together(config, data.nodes),
                                 device)
        self.shapes: dict[str, ModelShape] = {}
        self._built = engine  # the main shape's engine, built by the calibration
        self.main = self.shape("main", config.model, model)

    # -- the main shape's parts (what most algorithms use)
    @property
    def model(self) -> nn.Module:
        return self.main.model

    @property
    def layout(self) -> ParamLayout:
        return self.main.layout

    @property
    def engine(self) -> GradientEngine:
        return self.main.engine

    @property
    def local_engine(self) -> GradientEngine:
        return self.main.local_engine

    @property
    def trainer(self) -> LocalTrainer:
        return self.main.trainer

    @property
    def init_params(self) -> torch.Tensor:
        return self.main.init_params

    @property
    def init_buffers(self) -> Buffers:
        return self.main.init_buffers

    @property
    def model_bytes(self) -> int:
        return self.main.model_bytes

    @property
    def seed(self) -> int:
        return self.config.seed

    def lr(self, round_index: int) -> float:
        return scheduled_lr(self.config.train, round_index)

    # -- shapes
    def shape(self, name: str, model_config: ModelConfig | None = None,
              model: nn.Module | None = None) -> ModelShape:
        """The model shape ``name``, built on first use from ``model_config`` (initialised from
        (seed, "init") for ``main``, (seed, "init:<name>") for the others; or ``model``,
        already built that way)."""
        if name in self.shapes:
            return self.shapes[name]
        if model_config is None:
            raise KeyError(f"model shape {name!r} is not built yet; pass its model config")
        data = self.data
        if model is None:
            torch.manual_seed(derive_seed(self.seed, "init" if name == "main"
                                          else f"init:{name}"))
            model = build_model(model_config, data.input_shape, data.num_classes)
            model = model.to(self.device)
        layout = ParamLayout.of(model)
        built, self._built = self._built, None
        backend = self._backend_of(model)
        local = built if built is not None and built.name == backend and \
            getattr(built, "model", None) is model else self._engine(model, layout, self.data)
        local.calibration = self.calibration
        engine, local, trainer = assemble_trainer(local, self.data, self.config, self.comm)
        shape = ModelShape(name, model_config, model, layout, flat_params(model),
                           model_buffers(model), engine, local, trainer)
        self.shapes[name] = shape
        return shape

    def _backend_of(self, model: nn.Module) -> str:
        """The run's backend, or the loop for BatchNorm models (vmap cannot run them)."""
        return "loop" if uses_batchnorm(model) else self.backend

    def _engine(self, model: nn.Module, layout: ParamLayout, data: FederatedData
                ) -> GradientEngine:
        """The bare gradient engine of ``model`` over ``data`` (the run's backend; the loop for
        BatchNorm models)."""
        engine = build_engine(self._backend_of(model), model, layout, data, self.seed, self.chunk)
        engine.calibration = self.calibration
        return engine

    def with_data(self, data: FederatedData) -> RunContext:
        """The same run over other node shards (e.g. the centralized union, a leave-one-out
        retraining): same model, initial state and engine decision; engines and trainers over
        ``data``, wrapped as the run's are (``assemble_trainer``: DP-SGD, distributed,
        attacks)."""
        other = object.__new__(RunContext)
        other.__dict__.update(self.__dict__)
        other.data = data
        other.shapes = {}
        for name, s in self.shapes.items():
            engine, local, trainer = assemble_trainer(self._engine(s.model, s.layout, data),
                                                      data, self.config, self.comm)
            other.shapes[name] = dataclasses.replace(s, engine=engine, local_engine=local,
                                                     trainer=trainer)
        other.main = other.shapes["main"]
        return other


def assemble_trainer(engine: GradientEngine, data: FederatedData, config: Config,
                     comm: Comm | None) -> tuple[GradientEngine, GradientEngine, LocalTrainer]:
    """The one place the trainer's wrappers are put together, innermost first:

    1. DP-SGD (``privacy.level: sample``): per-sample clipping and Gaussian noise around the
       bare ``engine`` (``privacy.sample.SampleDPEngine``);
    2. under a process group, the gradient engine shared across ranks and the distributed
       trainer (``distributed.trainer``), else the local trainer;
    3. the attackers' uploads around the trainer (``robust.attacks.uplink``).

    Returns (engine, local engine, trainer): ``local engine`` computes this process's rows
    (DP-SGD included), ``engine`` is the distributed one when there is a process group."""
    local = engine
    if config.privacy.level == "sample":
        local = SampleDPEngine(local, config.privacy, config.train, data, config.seed)
    shared: GradientEngine = local
    trainer: LocalTrainer
    if comm is not None:
        shared = DistributedGradientEngine(local, comm)
        trainer = DistributedTrainer(local, data, config.train, comm)
    else:
        trainer = LocalTrainer(local, data, config.train)
    trainer = uplink(trainer, config.attack, config.clock, config.seed)
    return shared, local, trainer


def typical_cohort(config: Config, nodes: int) -> int:
    """Models trained together in a round: the federated cohort (clients_per_round or
    fraction × nodes), 1 for the centralized reference, all nodes for decentralized runs."""
    alg = config.algorithm
    if alg.kind == "centralized":
        return 1
    if alg.kind == "decentralized":
        return nodes
    per_round = getattr(alg, "clients_per_round", None)
    if per_round is not None:
        return max(1, min(int(per_round), nodes))
    fraction = getattr(alg, "fraction", None)
    return max(1, round((fraction if fraction is not None else 1.0) * nodes))


def stepping_together(config: Config, nodes: int) -> int:
    """Models one gradient call trains: ``typical_cohort``, except for asynchronous peers
    whose clocks drift apart (``clock.phase: random``, unequal speeds or a trace), which step
    one by one: 1. It sets the engine's chunk and what the engine decision times, so a node
    stepping alone computes one row, not a chunk of eight."""
    clock = config.clock
    if config.algorithm.kind == "decentralized" and clock.asynchronous and (
            clock.phase == "random" or clock.speed_sigma > 0 or clock.trace is not None
            or len(set(clock.speeds or [1.0])) > 1):
        return 1
    return typical_cohort(config, nodes)


def _agree(comm: Comm | None, backend: str, record: dict[str, Any]
           ) -> tuple[str, dict[str, Any]]:
    """Every rank adopts rank 0's backend (one engine everywhere keeps the ranks' float
    behaviour identical; calibration timings differ between processes)."""
    if comm is None or comm.world == 1:
        return backend, record
    code = torch.tensor([BACKENDS.index(backend)], device=comm.device)
    chosen = BACKENDS[int(comm.all_gather(code, "backend agreement")[0])]
    if chosen != backend or comm.rank:
        record = {**record, "chosen": chosen,
                  "distributed": "rank 0's choice, adopted by every rank"}
    return chosen, record


def build_context(config: Config, data: FederatedData | None = None,
                  backend: str | None = None) -> RunContext:
    """The context of ``config`` in this process. ``backend``: reuse a recorded engine decision
    (a resumed run continues with the engine it started with)."""
    # the data are prepared on the same thread count in every launcher; the run's own count
    # (``training.threads``) follows once the model's size is known
    apply_threads(config.engine.threads or 1)
    device = resolve_device(config.engine.device)
    comm: Comm | None = None
    if config.launcher.name == "distributed" or under_torchrun():
        device = local_device(device)
        comm = init_comm(config.launcher.timeout_s, device)
    cohort = typical_cohort(config, config.data.nodes) \
        if config.algorithm.kind == "federated" and config.attack.name is None else None
    data = (data or build_data(config.data, config.seed, cohort)).to(device)
    data = corrupt_data(data, config.attack, config.seed)  # the data attacks' shards
    torch.manual_seed(derive_seed(config.seed, "init"))
    probe = build_model(config.model, data.input_shape, data.num_classes).to(device)
    flops = 0.0 if config.engine.threads else step_flops(probe, data.input_shape,
                                                         config.train.batch_size, device)
    threads, why = choose_threads(config.engine.threads, flops, cores())
    apply_threads(threads)  # before the engine decision: its key holds the thread count
    pool = cores() if threads == 1 and not config.engine.threads and device.type == "cpu" \
        else 1
    set_workers(pool)  # the idle cores take independent pieces of a step (training.workers)
    cohort = stepping_together(config, data.nodes)
    built: dict[str, GradientEngine] = {}  # the engines a calibration built: one is reused
    chosen, record = choose_backend(config.engine, probe, ParamLayout.of(probe), data,
                                    config.seed, cohort, config.train.batch_size,
                                    forced=backend, built=built,
                                    chunk=chunk_width(config.engine.chunk, cohort, device),
                                    stacked=typical_cohort(config, data.nodes))
    chosen, record = _agree(comm, chosen, record)
    ctx = RunContext(config, data, device, comm, chosen, record, probe, built.get(chosen))
    ctx.threads = {"threads": threads, "rule": why, "workers": pool}
    return ctx
