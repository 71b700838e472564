"""The ``engine`` and ``launcher`` sections: how local training is computed and how the
processes that compute it start (never what a run computes).

Two words, one meaning each: the **engine** computes the local gradient steps (``loop``,
``vectorized``, ``fused``) on a device with some threads; the **launcher** starts the run's
processes (one process, or ``torch.distributed`` ranks from torchrun or ``--procs``) and holds
what only a multi-process run uses. The keys of older configs (``engine.backend``, the
``local``/``distributed`` values of ``engine.name``, ``engine.timeout_s``,
``engine.exchange``) are migrated on load with one warning each (``fedweave.config.load``).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from fedweave.config.base import Section

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class EngineConfig(Section):
    """How local training is computed."""

    name: Literal["auto", "loop", "vectorized", "fused"] = Field(
        "auto", description="how local gradients are computed: loop (one model at a time), "
        "vectorized (torch.func vmap over the node stack), fused (batched matmuls for "
        "Linear/ReLU stacks, whole local rounds on per-layer stacks); auto: fused when the "
        "model is a Linear/ReLU stack, else the faster of loop and vectorized (measured once "
        "per machine, model and shapes, then reused: fedweave.training.select)")
    device: str = Field(
        "auto", description="auto (cuda when this torch sees a GPU, else cpu), cpu, cuda, "
        "cuda:N or mps; a device this torch cannot use is refused before the data is "
        "loaded")
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; null = "
                                "fedweave's choice: 1 when a training step is under 1 GFLOP, "
                                "else this process's share of the cores "
                                "(fedweave.training.threads)")
    chunk: int | None = Field(
        None, ge=1, description="rows per batched kernel call of the vectorized and fused "
        "engines; processes hold whole chunks, so results are bit-identical for any process "
        "count. null = min(8 on a CPU / 64 on a GPU, the rows trained together)",
        json_schema_extra={"unit": "rows"})

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
        return value


class LauncherConfig(Section):
    """How the run's processes start."""

    name: Literal["single", "distributed"] = Field(
        "single", description="single: one process; distributed: torch.distributed ranks "
        "(torchrun, or --procs N which sets it)")
    timeout_s: float = Field(300.0, gt=0, description="distributed: how long a rank waits "
                             "for a peer before the run ends with that rank named",
                             json_schema_extra={"unit": "s"})
    exchange: Literal["auto", "all_gather", "point_to_point"] = Field(
        "auto", description="distributed decentralized runs: all-gather every node's "
        "gradients, or split the nodes and send neighbour messages point to point")
