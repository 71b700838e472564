"""The ``output`` and ``notify`` sections: where a run's records go and who hears of them
(never what it computes)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fedweave.config.base import Section


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
        "gives summary.json time_to_target: {sim_s, update} (null in the summary if never); "
        "also a column of sweep.csv and of fedweave report")
    stop_at_target: bool = Field(
        False, description="end the run at the first evaluation whose test accuracy reaches "
        "output.target_acc (summary.json stop_reason: target_acc)")
    max_sim_s: float | None = Field(
        None, gt=0, description="simulated-time budget: after the round or server update that "
        "takes the virtual clock to this many seconds the run is evaluated and ends "
        "(summary.json stop_reason: max_sim_s); null = no budget",
        json_schema_extra={"unit": "s"})

    @model_validator(mode="after")
    def _target_given(self) -> OutputConfig:
        if self.stop_at_target and self.target_acc is None:
            raise ValueError("output.stop_at_target needs output.target_acc (the accuracy to "
                             "stop at), e.g. --set output.target_acc=0.8")
        return self


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
