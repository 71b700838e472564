"""The ``engine``, ``output`` and ``notify`` sections: how a run is computed and where its
records go (never what it computes)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from fedweave.config.base import Section

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class EngineConfig(Section):
    """How the run is computed (never what it computes)."""

    name: Literal["local", "distributed"] = Field(
        "local", description="local: one process; distributed: torch.distributed ranks "
        "(torchrun or --procs)")
    backend: Literal["auto", "loop", "vectorized", "fused"] = Field(
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
    timeout_s: float = Field(300.0, gt=0, description="distributed: peer timeout",
                             json_schema_extra={"unit": "s"})
    exchange: Literal["auto", "all_gather", "point_to_point"] = Field(
        "auto", description="distributed decentralized runs: all-gather every node's "
        "gradients, or split the nodes and send neighbour messages point to point")

    @field_validator("device")
    @classmethod
    def _device_name(cls, value: str) -> str:
        if not DEVICE.fullmatch(value):
            raise ValueError(f"{value!r} is not a device: use auto, cpu, cuda, cuda:N or mps")
        return value


class OutputConfig(Section):
    """The run directory: checkpoints, evaluation, plots, trackers."""

    dir: Path = Field(Path("runs"), description="parent folder of run directories (--out)")
    checkpoint_every: int = Field(1, ge=0, description="rounds between checkpoints; 0 = never",
                                  json_schema_extra={"unit": "rounds"})
    keep: Literal["latest", "every_k", "best", "all"] = Field(
        "latest", description="checkpoints kept: the newest (and its predecessor as a "
        "fallback), also every keep_every-th round, also the best by validation accuracy, or "
        "all")
    keep_every: int = Field(10, ge=1, description="keep: every_k keeps rounds divisible by "
                            "this", json_schema_extra={"unit": "rounds"})
    eval_every: int = Field(1, ge=1, description="rounds between evaluations (the last round "
                            "is always evaluated)", json_schema_extra={"unit": "rounds"})
    client_eval: Literal["cohort", "all", "never"] = Field(
        "cohort", description="federated runs: whose validation split is evaluated at each "
        "evaluation (rows of clients.csv, the clients_val_* spread, and the global model's "
        "pooled val_*): cohort = the clients trained that round (cost grows with the cohort); "
        "all = every client every evaluation (cost grows with the population: 100,000 "
        "clients are 100,000 evaluations); never = no per-client rows (val_* pools every "
        "client's split)")
    finetune_steps: int = Field(
        0, ge=0, description="with data.client_test_fraction: local SGD steps (train.lr, "
        "train.batch_size) each client takes on its own training shard from its model before "
        "the personalised test (FedAvg + fine-tuning, as FL-bench and PFLlib evaluate); 0 = "
        "none", json_schema_extra={"unit": "steps"})
    plots: bool = Field(True, description="draw plots/*.png at the end of the run")
    progress: bool = Field(True, description="progress bar / log lines on the terminal "
                           "(informational)", json_schema_extra={"informational": True})
    tensorboard: bool = Field(False, description="write TensorBoard event files to "
                              "<run>/tensorboard (optional extra: pip install fedweave[trackers])")
    mlflow: str | None = Field(None, description="MLflow tracking URI (file:/path, http://host) "
                               "to log params and metrics to (optional extra: fedweave[trackers])")
    target_acc: float | None = Field(
        None, gt=0, le=1, description="test accuracy (0..1) whose first evaluation reaching it "
        "gives summary.json time_to_target: {sim_s, update} (null in the summary if never)")


class NotifyConfig(Section):
    """Messages about a run (reference system 004's push) through Apprise URLs: Telegram
    ``tgram://``, Slack, e-mail, ntfy, Discord, a JSON webhook ``json://``... The URLs hold
    tokens, so they are never part of the config: they come from ``$FEDWEAVE_NOTIFY``
    (comma-separated) and from ``urls_file``. No URL, no messages."""

    events: list[Literal["start", "every_k", "finish", "failure"]] = Field(
        default_factory=lambda: ["finish", "failure"],  # type: ignore[arg-type]
        description="when to send a message "
        "(every_k: every notify.every rounds)")
    every: int = Field(10, ge=1, description="rounds between every_k messages",
                       json_schema_extra={"unit": "rounds"})
    urls_file: Path | None = Field(None, description="a file outside the run directory with "
                                   "Apprise URLs, one per line (its path, not its content, is "
                                   "recorded)")
