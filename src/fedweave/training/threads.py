"""How many threads torch uses in a fedweave process: fedweave decides, not torch's default
(one per core) nor the launcher's (torchrun exports ``OMP_NUM_THREADS=1`` to every rank).

The count is a function of the workload and of the cores this process may use, never of how
the process was started, so ``fedweave run``, ``fedweave run --procs N`` and ``torchrun`` run
the same kernels with the same thread count — and a kernel's float reductions (convolutions,
matrix products, loss sums over an evaluation batch) are split by thread count, so a different
count gives different low bits. The rule (``choose_threads``):

- ``engine.threads`` set: that many;
- otherwise one thread when a training step is small, i.e. ``step_flops`` (forward + backward
  of one local batch, ``3 × batch × forward FLOPs of one sample``, counted by forward hooks on
  its linear, convolution, recurrent and attention layers) is below ``LARGE_STEP_FLOPS``: at
  that size a step takes milliseconds and the threads' start-up and synchronisation cost what
  they save (the default CNN on digits: 65 MFLOP a step; the cross-device MLP 784-128-10 at
  batch 20: 8 MFLOP);
- otherwise every core this process may use (``cores``): the physical cores of its affinity
  mask, divided by the processes sharing them (``LOCAL_WORLD_SIZE``, set by torchrun and by
  ``--procs``; ``FEDWEAVE_CORES``, set by ``sweep --jobs``, wins over both).
With one thread, the other cores of the process take independent pieces of each step
(``fedweave.training.workers``), which keeps the numbers bit-identical.

OpenMP threads that wait for work spin for a while before sleeping; on cores shared with other
processes the spinning takes the cores those processes need, and a run slows down tens of
times. ``quiet_openmp`` sets ``OMP_WAIT_POLICY=PASSIVE`` (unless the user set it), which the
OpenMP runtime reads once, when torch is first imported: the command line calls it before any
import of torch, and the processes it starts inherit it.

This module imports torch only inside ``apply_threads``/``step_flops``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

WAIT_ENV = "OMP_WAIT_POLICY"
CORES_ENV = "FEDWEAVE_CORES"
LARGE_STEP_FLOPS = 1e9
"""A training step below this many FLOPs runs on one thread (the rule in the module text)."""


def quiet_openmp() -> None:
    """``OMP_WAIT_POLICY=PASSIVE`` in this process's environment unless already set (only
    effective before torch is first imported; inherited by the processes started later)."""
    os.environ.setdefault(WAIT_ENV, "PASSIVE")


def physical_cpus() -> int:
    """Physical cores among the CPUs of this process's affinity mask (hyper-threads of one
    core count once, as in torch's own default); the CPU count where the topology is unknown."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topology / "physical_package_id").read_text().strip(),
                       (topology / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return max(1, len(cores))


def cores() -> int:
    """Cores this process may use: ``FEDWEAVE_CORES`` when set, else the physical cores of
    this process's affinity mask divided by ``LOCAL_WORLD_SIZE`` (at least 1)."""
    given = os.environ.get(CORES_ENV, "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    cpus = physical_cpus()
    local = os.environ.get("LOCAL_WORLD_SIZE", "")
    procs = int(local) if local.isdigit() and int(local) > 0 else 1
    return max(1, cpus // procs)


def choose_threads(requested: int | None, flops: float, available: int) -> tuple[int, str]:
    """(threads, why): ``requested`` (``engine.threads``) when set, else 1 for a step of
    ``flops`` below ``LARGE_STEP_FLOPS``, else ``available`` cores."""
    if requested:
        return requested, "engine.threads"
    if flops < LARGE_STEP_FLOPS:
        return 1, f"one thread: a training step is {flops / 1e6:.0f} MFLOP (< 1 GFLOP)"
    return max(1, available), (f"{max(1, available)} threads (the cores of this process): a "
                               f"training step is {flops / 1e9:.1f} GFLOP")


def step_flops(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
               device: torch.device) -> float:
    """FLOPs of one training step: 3 × ``batch_size`` × one sample's forward (backward counted
    as twice the forward). The forward counts 2 FLOPs per multiply-add of the layers that
    carry the work — linear, convolution, recurrent cells, attention (``_layer_flops``) — seen
    by forward hooks while the model runs once in eval mode on zeros, without gradients; its
    mode and the global RNG are left as found. (torch's ``FlopCounterMode`` counts every op
    but imports the compiler stack, a second of start-up.) A model that cannot run on float
    zeros (a plugin's), or has none of those layers, is counted as 2 FLOPs per parameter and
    sample."""
    import torch

    was_training = model.training
    state = torch.get_rng_state()
    counted: list[float] = []
    hooks = [m.register_forward_hook(lambda mod, args, out: counted.append(
        _layer_flops(mod, args, out))) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
        forward = sum(counted)
    except Exception:  # an estimate only: any model must still run
        forward = 0.0
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
        torch.set_rng_state(state)
    if forward <= 0:
        forward = 2.0 * sum(p.numel() for p in model.parameters())
    return 3.0 * batch_size * forward


def _layer_flops(module: nn.Module, args: tuple[object, ...], out: object) -> float:
    """2 × the multiply-adds of one call of ``module`` (0 for layers without matrix work)."""
    from torch import Tensor, nn

    first = out[0] if isinstance(out, tuple) else out
    if not isinstance(first, Tensor):
        return 0.0
    if isinstance(module, nn.Linear):
        return 2.0 * module.in_features * first.numel()
    if isinstance(module, nn.modules.conv._ConvNd):
        k = module.in_channels // module.groups
        for size in module.kernel_size:
            k *= size
        return 2.0 * k * first.numel()
    if isinstance(module, nn.RNNBase):
        x = args[0] if args and isinstance(args[0], Tensor) else None
        if x is None:
            return 0.0
        steps = x.shape[:-1].numel()  # (batch ×) sequence positions
        gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
        dirs = 2 if module.bidirectional else 1
        h = module.hidden_size
        total, width = 0.0, module.input_size
        for _ in range(module.num_layers):
            total += 2.0 * gates * (width + h) * h * steps * dirs
            width = h * dirs
        return total
    if isinstance(module, nn.MultiheadAttention):
        q = args[0] if args and isinstance(args[0], Tensor) else None
        if q is None:
            return 0.0
        e = module.embed_dim
        length = q.shape[0 if not module.batch_first else 1] if q.dim() == 3 else q.shape[0]
        positions = q.shape[:-1].numel()
        # in- and out-projections (4 E² per position) and the two attention products
        return 2.0 * (4 * e * e * positions + 2 * length * e * positions)
    return 0.0


def apply_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` (a no-op when already so)."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
