"""Choosing the gradient engine for a workload (``engine.backend``): loop or vectorized.

``loop`` and ``vectorized`` are taken as asked (a BatchNorm model always runs on the loop
engine, with a one-line notice: vmap cannot run training-mode BatchNorm). ``auto`` measures:

    calibration: K = min(cohort, nodes, ``CALIBRATION_NODES``) nodes, batches of the run's batch
    size (both engines' step times grow ~linearly in K, so a 16-node sample keeps the cost of
    calibrating a 100-client cohort at a few steps of 16 clients; it slightly favours the loop,
    whose per-node overhead vmap amortises better on bigger cohorts);
    one warm-up step per engine, then up to ``CALIBRATION_STEPS`` timed gradient steps each,
    interleaved (loop, vectorized, loop, ...) so a load spike hits both, stopping as soon as
    one engine is ``CLEAR_MARGIN``× faster;
    rule: vectorized if min_t(vectorized) < min_t(loop), else loop.

The decision is cached per (model architecture, input shape, device, threads, batch width,
cohort-size bucket 2^⌈log2 K⌉) for the life of the process, and recorded on the engine as
``engine.calibration`` (chosen engine, seconds per step measured, the rule), which the runner
writes to summary.json.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from torch import nn

from fedweave.config import EngineConfig
from fedweave.core.population import ParamLayout, flat_params, model_buffers, stack_buffers
from fedweave.data.federated import FederatedData
from fedweave.errors import UserError
from fedweave.models import uses_batchnorm
from fedweave.training.batches import batch_schedule
from fedweave.training.fused import FusedEngine, linear_stack
from fedweave.training.loop import LoopEngine
from fedweave.training.protocol import GradientEngine
from fedweave.training.vectorized import VectorizedEngine

log = logging.getLogger("fedweave")

CALIBRATION_STEPS = 2
CLEAR_MARGIN = 1.3
CALIBRATION_NODES = 16  # at most this many nodes are timed (cost ∝ K for both engines)
_DECISIONS: dict[tuple[Any, ...], dict[str, Any]] = {}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _bucket(k: int) -> int:
    return 1 << max(0, k - 1).bit_length()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step(engine: GradientEngine, params: torch.Tensor, buffers: dict[str, torch.Tensor],
          idx: torch.Tensor, weight: torch.Tensor, nodes: torch.Tensor, s: int) -> float:
    """Seconds of one gradient step of ``engine`` on batch column ``s``."""
    active = torch.ones(len(nodes), dtype=torch.bool, device=params.device)
    col = s % idx.shape[1]
    _sync(params.device)
    t0 = time.perf_counter()
    engine.grads(params, buffers, idx[:, col], weight[:, col], active, (0, s), nodes)
    _sync(params.device)
    return time.perf_counter() - t0


def calibrate(model: nn.Module, layout: ParamLayout, data: FederatedData, seed: int,
              cohort: int, batch_size: int, steps: int = CALIBRATION_STEPS
              ) -> tuple[str, dict[str, Any]]:
    """Time both engines on ``cohort`` nodes' real batches; returns (chosen, record)."""
    device = next(model.parameters()).device
    k = max(1, min(cohort, data.nodes, CALIBRATION_NODES))
    nodes = torch.arange(k)
    width = min(batch_size, max(len(data.train_idx[i]) for i in range(k)))
    key = (type(model).__name__, tuple((n, tuple(s)) for n, s in
                                       zip(layout.names, layout.shapes, strict=True)),
           tuple(m.__class__.__name__ for m in model.modules()), data.input_shape,
           str(device), torch.get_num_threads(), width, _bucket(k))
    if key in _DECISIONS:
        return _DECISIONS[key]["chosen"], {**_DECISIONS[key], "cached": True}
    t_start = time.perf_counter()
    batches = batch_schedule(data, nodes, torch.full((k,), steps + 1), batch_size,
                             key=(-1,), purpose="calibration")
    params = flat_params(model).to(device).expand(k, -1).clone()
    buffers = stack_buffers(model_buffers(model), k)
    nodes_dev = nodes.to(device)
    rng_state = torch.get_rng_state()  # dropout reseeds the global generator; leave it as found
    candidates: dict[str, GradientEngine] = {
        "loop": LoopEngine(model, layout, data, seed),
        "vectorized": VectorizedEngine(model, layout, data, seed)}
    times: dict[str, list[float]] = {name: [] for name in candidates}

    def step(name: str, s: int) -> float:
        return _step(candidates[name], params, buffers, batches.idx, batches.weight,
                     nodes_dev, s)

    for name in candidates:  # warm-up (first vmap call, kernel selection)
        step(name, 0)
    for s in range(1, steps + 1):  # interleaved, so a load spike hits both engines
        for name in candidates:
            times[name].append(step(name, s))
        ratio = min(times["loop"]) / min(times["vectorized"])
        if ratio > CLEAR_MARGIN or ratio < 1 / CLEAR_MARGIN:
            break  # the decision is clear: stop early
    torch.set_rng_state(rng_state)
    t_loop, t_vec = min(times["loop"]), min(times["vectorized"])
    chosen = "vectorized" if t_vec < t_loop else "loop"
    record = {
        "chosen": chosen,
        "rule": "vectorized if min step time(vectorized) < min step time(loop); one warm-up "
                f"step each, then up to {steps} interleaved timed gradient steps of K={k} "
                f"nodes × batch {width} (stop once one is {CLEAR_MARGIN}× faster)",
        "cohort": cohort, "timed_nodes": k, "batch": width, "device": str(device),
        "step_s": {"loop": times["loop"], "vectorized": times["vectorized"]},
        "speedup_vectorized": t_loop / t_vec if t_vec > 0 else None,
        "calibration_s": time.perf_counter() - t_start,
        "cached": False,
    }
    _DECISIONS[key] = record
    return chosen, record


BACKENDS = ("loop", "vectorized", "fused")


def choose_backend(cfg: EngineConfig, model: nn.Module, layout: ParamLayout,
                   data: FederatedData, seed: int, cohort_size: int, batch_size: int,
                   forced: str | None = None) -> tuple[str, dict[str, Any]]:
    """(backend, record) for ``cfg.backend``: as asked, the loop for BatchNorm models,
    ``forced`` (a resumed run's recorded choice), or measured (``auto``, ``calibrate``)."""
    if forced is not None:
        return forced, {"chosen": forced, "rule": "the backend recorded by the resumed run"}
    backend = cfg.backend
    if uses_batchnorm(model):
        if backend != "loop":
            log.warning("engine.backend=%s: BatchNorm model cannot be vmapped in training mode;"
                        " using the loop engine (set model.norm=group for the vectorized "
                        "engine)", backend)
        return "loop", {"chosen": "loop", "rule": "BatchNorm model: loop engine (vmap-unsafe)"}
    if backend == "fused" and linear_stack(model) is None:
        raise UserError("engine.backend=fused needs a Flatten → (Linear → ReLU)* → Linear model "
                        "(logistic, mlp without dropout); use engine.backend=vectorized")
    if backend == "auto" and linear_stack(model) is not None:
        return "fused", {"chosen": "fused", "rule": "Linear/ReLU stack: the fused engine "
                         "(batched matmuls on per-layer stacks), no timing"}
    if backend == "auto":
        return calibrate(model, layout, data, seed, cohort_size, batch_size)
    return backend, {"chosen": backend, "rule": f"engine.backend={backend}"}


def build_engine(backend: str, model: nn.Module, layout: ParamLayout, data: FederatedData,
                 seed: int, chunk: int = 8) -> GradientEngine:
    """The ``loop``, ``vectorized`` or ``fused`` engine over ``data``; the batched ones compute
    ``chunk`` rows per kernel call (``training.chunks``)."""
    if backend == "vectorized":
        return VectorizedEngine(model, layout, data, seed, chunk=chunk)
    if backend == "fused":
        return FusedEngine(model, layout, data, seed, chunk=chunk)
    return LoopEngine(model, layout, data, seed)


def make_gradient_engine(cfg: EngineConfig, model: nn.Module, layout: ParamLayout,
                         data: FederatedData, seed: int, *, cohort_size: int | None = None,
                         batch_size: int = 32) -> GradientEngine:
    """``choose_backend`` then ``build_engine`` (the engine carries the record as
    ``calibration``); ``cohort_size`` defaults to all nodes."""
    chosen, record = choose_backend(cfg, model, layout, data, seed,
                                    cohort_size if cohort_size is not None else data.nodes,
                                    batch_size)
    engine = build_engine(chosen, model, layout, data, seed)
    engine.calibration = record
    return engine
