"""Choosing the gradient engine for a workload (``engine.name``): loop or vectorized.

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

The decision is made once per machine and then sticks, so timing noise never changes results:
it is stored in ``$XDG_CACHE_HOME/fedweave/engine-decisions.json`` (default
``~/.cache/fedweave``; ``fedweave.training.decisions``), keyed by the hardware (CPU model and
count, GPU name), the torch version, the thread count, the device, the model (module classes
and parameter shapes), the input shape, the batch width and the cohort-size bucket
2^⌈log2 K⌉; two processes calibrating at once both adopt the decision stored first. Delete the
file to measure again, or pin ``engine.name: loop|vectorized``. The record (chosen
engine, seconds per step measured, the rule, where the decision came from) is
``engine.calibration``, which the runner writes to summary.json; a resumed run reuses its
checkpoint's engine whatever the cache says.

Why a measured-once cache rather than a fixed rule: which engine is faster depends on the
machine (cores, BLAS, a GPU) and the workload in ways a rule of thumb gets wrong by several
times; measuring once keeps that benefit, and storing the result makes it as repeatable as a
rule on that machine. Another machine may decide differently: pin ``engine.name`` for
numbers that must agree across machines.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import Any

import torch
from torch import nn

from fedweave.config import EngineConfig
from fedweave.core.population import ParamLayout, flat_params, model_buffers, stack_buffers
from fedweave.data.federated import FederatedData
from fedweave.errors import UserError
from fedweave.memory import require_memory
from fedweave.models import uses_batchnorm
from fedweave.training.batches import batch_schedule
from fedweave.training.decisions import (
    BACKENDS,
    decision_file,
    hardware,
    store_decision,
    stored_decision,
)
from fedweave.training.fused import FusedEngine, linear_stack
from fedweave.training.loop import LoopEngine
from fedweave.training.protocol import GradientEngine
from fedweave.training.vectorized import VectorizedEngine

log = logging.getLogger("fedweave")

CALIBRATION_STEPS = 2
CLEAR_MARGIN = 1.3
CALIBRATION_NODES = 16  # at most this many nodes are timed (cost ∝ K for both engines)
_DECISIONS: dict[str, dict[str, Any]] = {}
__all__ = ["BACKENDS", "build_engine", "calibrate", "choose_backend", "make_gradient_engine",
           "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``engine.device`` as a device this torch can use, or a one-line ``UserError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if torch.version.cuda is None:
            raise UserError(f"engine.device={name}: this torch ({torch.__version__}) is built "
                            "without CUDA; use engine.device=cpu (or auto), or install a CUDA "
                            "build of torch")
        count = torch.cuda.device_count()
        if count == 0:
            raise UserError(f"engine.device={name}: no CUDA device is visible (check the "
                            "driver and CUDA_VISIBLE_DEVICES); use engine.device=cpu or auto")
        if device.index is not None and device.index >= count:
            raise UserError(f"engine.device={name}: this machine has {count} CUDA device(s), "
                            f"cuda:0..cuda:{count - 1}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"engine.device={name}: MPS is not available here; use "
                        "engine.device=cpu or auto")
    return device


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
              cohort: int, batch_size: int, steps: int = CALIBRATION_STEPS, chunk: int = 8,
              built: dict[str, GradientEngine] | None = None) -> tuple[str, dict[str, Any]]:
    """Time both engines on ``cohort`` nodes' real batches; returns (chosen, record). The
    engines timed (the vectorized one with ``chunk`` rows per call) go into ``built``, so the
    run trains with the one chosen instead of building it again."""
    device = next(model.parameters()).device
    k = max(1, min(cohort, data.nodes, CALIBRATION_NODES))
    nodes = torch.arange(k)
    width = min(batch_size, max(len(data.train_idx[i]) for i in range(k)))
    key = {"hardware": hardware(device), "torch": torch.__version__,
           "threads": torch.get_num_threads(), "device": str(device),
           "model": [type(model).__name__, [m.__class__.__name__ for m in model.modules()],
                     [[n, list(s)] for n, s in zip(layout.names, layout.shapes, strict=True)]],
           "input_shape": list(data.input_shape), "batch": width, "cohort_bucket": _bucket(k)}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    if digest in _DECISIONS:
        return _DECISIONS[digest]["chosen"], {**_DECISIONS[digest], "cached": True,
                                              "source": "this process"}
    stored = stored_decision(digest)
    if stored is not None:
        _DECISIONS[digest] = stored
        return stored["chosen"], {**stored, "cached": True,
                                  "source": f"machine cache {decision_file()}"}
    t_start = time.perf_counter()
    batches = batch_schedule(data, nodes, torch.full((k,), steps + 1), batch_size,
                             key=(-1,), purpose="calibration")
    params = flat_params(model).to(device).expand(k, -1).clone()
    buffers = stack_buffers(model_buffers(model), k)
    nodes_dev = nodes.to(device)
    rng_state = torch.get_rng_state()  # dropout reseeds the global generator; leave it as found
    candidates: dict[str, GradientEngine] = {
        "loop": LoopEngine(model, layout, data, seed),
        "vectorized": VectorizedEngine(model, layout, data, seed, chunk=chunk)}
    if built is not None:
        built.update(candidates)
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
        "key": key, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    stored = store_decision(digest, record)
    _DECISIONS[digest] = stored
    if stored is not record:  # another process stored its decision first: adopt it
        return stored["chosen"], {**stored, "cached": True,
                                  "source": f"machine cache {decision_file()}"}
    return chosen, {**record, "cached": False, "source": "measured"}


STATE_COPIES = 6  # per trained model: start, working copy, gradient, 2 optimizer moments, result


def check_cohort(layout: ParamLayout, cohort: int, device: torch.device) -> None:
    """Refuse up front a cohort (all nodes, for decentralized runs) whose stacked parameter
    state alone, ``STATE_COPIES`` float32 copies of [K, P], exceeds the memory available on
    the device (a lower bound: activations come on top)."""
    require_memory(cohort * layout.total * 4 * STATE_COPIES,
                   f"training {cohort} models of {layout.total} parameters at once "
                   f"({STATE_COPIES} copies each, activations not counted)",
                   "train fewer at once (algorithm.clients_per_round or fraction; data.nodes "
                   "for decentralized runs) or choose a smaller model", str(device))


def choose_backend(cfg: EngineConfig, model: nn.Module, layout: ParamLayout,
                   data: FederatedData, seed: int, cohort_size: int, batch_size: int,
                   forced: str | None = None, chunk: int = 8,
                   built: dict[str, GradientEngine] | None = None,
                   stacked: int | None = None) -> tuple[str, dict[str, Any]]:
    """(backend, record) for ``cfg.name``: as asked, the loop for BatchNorm models,
    ``forced`` (a resumed run's recorded choice), or measured (``auto``, ``calibrate``, which
    leaves the engines it built in ``built``).
    First, a cohort whose stacked training state cannot fit is refused (``check_cohort``;
    ``stacked`` rows, default ``cohort_size``)."""
    check_cohort(layout, stacked or cohort_size, next(model.parameters()).device)
    if forced is not None:
        return forced, {"chosen": forced, "rule": "the backend recorded by the resumed run"}
    backend = cfg.name
    if uses_batchnorm(model):
        if backend != "loop":
            log.warning("engine.name=%s: BatchNorm model cannot be vmapped in training mode;"
                        " using the loop engine (set model.norm=group for the vectorized "
                        "engine)", backend)
        return "loop", {"chosen": "loop", "rule": "BatchNorm model: loop engine (vmap-unsafe)"}
    if backend == "fused" and linear_stack(model) is None:
        raise UserError("engine.name=fused needs a Flatten → (Linear → ReLU)* → Linear model "
                        "(logistic, mlp without dropout); use engine.name=vectorized")
    if backend == "auto" and linear_stack(model) is not None:
        return "fused", {"chosen": "fused", "rule": "Linear/ReLU stack: the fused engine "
                         "(batched matmuls on per-layer stacks), no timing"}
    if backend == "auto":
        return calibrate(model, layout, data, seed, cohort_size, batch_size, chunk=chunk,
                         built=built)
    return backend, {"chosen": backend, "rule": f"engine.name={backend}"}


def build_engine(backend: str, model: nn.Module, layout: ParamLayout, data: FederatedData,
                 seed: int, chunk: int = 8) -> GradientEngine:
    """The ``loop``, ``vectorized`` or ``fused`` engine over ``data``; the batched ones compute
    ``chunk`` rows per kernel call (``training.chunks``): a chunk of rows' training state
    that cannot fit (``engine.chunk=10**12``) is refused first."""
    if backend in ("vectorized", "fused"):
        require_memory(chunk * layout.total * 4 * STATE_COPIES,
                       f"engine.chunk={chunk} rows of {layout.total} parameters per kernel call "
                       f"({STATE_COPIES} copies each)", "lower engine.chunk (null: 8 on a CPU, "
                       "64 on a GPU)", str(next(model.parameters()).device))
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
