"""Experiment trackers as round-loop callbacks (optional extras: ``pip install
'fedweave[trackers]'``).

* ``output.tensorboard: true``: TensorBoard event files in ``<run>/tensorboard/``: every
  evaluated round's summary row (``accuracy/test``, ``loss/val``, ``stats/...``), each
  evaluated model's metrics (``nodes/<label>/test_acc``: decentralized peers, clusters), the
  resolved config as text and, at the end, as hparams with the final and best accuracy.
  A resumed run purges the events after its checkpoint, so curves are not doubled.
* ``output.mlflow: URI``: an MLflow run (experiment = the run name) with the flattened config
  as params, the summary row as metrics per round (step = round), ``summary.json`` as an
  artifact, and status FINISHED / FAILED / KILLED. A resumed run continues the same MLflow
  run (its id is kept in ``<run>/trackers.json``). A ``file:`` URI (a local store) sets
  ``MLFLOW_ALLOW_FILE_STORE=true``, which MLflow 3 requires for it.

Only the process that writes the run directory logs.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from fedweave.callbacks import Callback, register_callback
from fedweave.config import Config, config_to_dict, dump_config
from fedweave.errors import UserError

if TYPE_CHECKING:
    from fedweave.callbacks import RunResult, RunView

EXTRA = "pip install 'fedweave[trackers]'"


def flat_config(config: Config) -> dict[str, Any]:
    """``{"train.lr": 0.05, ...}``: scalars as they are, anything else as its JSON text."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
            return
        key = prefix.rstrip(".")
        out[key] = node if isinstance(node, int | float | str | bool) else json.dumps(node)

    walk(config_to_dict(config), "")
    return out


def scalar_name(key: str) -> str:
    """``test_acc`` → ``accuracy/test``; ``val_loss`` → ``loss/val``; others ``stats/<key>``."""
    split, _, metric = key.partition("_")
    if split in ("train", "val", "test") and metric in ("acc", "loss"):
        return f"{'accuracy' if metric == 'acc' else 'loss'}/{split}"
    return f"stats/{key}"


def numeric(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in row.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "round"}


class TensorBoard(Callback):
    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError(f"output.tensorboard: needs the tensorboard package ({EXTRA})") \
                from None
        self.writer_class = SummaryWriter
        self.writer: Any = None

    def on_start(self, runner: RunView) -> None:
        if runner.run_dir is None:
            return
        self.writer = self.writer_class(str(runner.run_dir.path / "tensorboard"),
                                        purge_step=runner.start_round + 1 if runner.start_round
                                        else None)
        if runner.start_round == 0:
            self.writer.add_text("config", "```yaml\n" + dump_config(runner.config) + "```")

    def on_evaluate(self, runner: RunView, r: int, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = r + 1
        for key, value in numeric(row).items():
            self.writer.add_scalar(scalar_name(key), value, step)
        if len(runner.last_rows) > 1:
            for label, metrics in runner.last_rows.items():
                for key, value in metrics.items():
                    self.writer.add_scalar(f"nodes/{label}/{key}", value, step)
        self.writer.flush()

    def on_finish(self, runner: RunView, result: RunResult) -> None:
        if self.writer is None:
            return
        s = result.summary
        metrics = {"hparam/final_test_acc": s["final"].get("test_acc", 0.0),
                   "hparam/best_test_acc": s["best"].get("test_acc", 0.0)}
        if "val_acc" in s["best"]:
            metrics["hparam/best_val_acc"] = s["best"]["val_acc"]
        self.writer.add_hparams(flat_config(runner.config), metrics, run_name="hparams")
        self.writer.close()
        self.writer = None

    def on_failure(self, runner: RunView, exc: BaseException) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflow(Callback):
    def __init__(self, uri: str) -> None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError(f"output.mlflow: needs the mlflow package ({EXTRA}, or "
                            "pip install mlflow-skinny)") from None
        if "://" not in uri or uri.startswith("file:"):
            # MLflow 3 keeps the file store only behind this switch; the user asked for it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.uri = uri
        try:
            self.client = MlflowClient(tracking_uri=uri)
        except Exception as exc:
            raise UserError(f"output.mlflow={uri}: {str(exc).splitlines()[0][:200]}") from None
        self.run_id: str | None = None

    def on_start(self, runner: RunView) -> None:
        if runner.run_dir is None:
            return
        from mlflow.entities import Param

        ids = runner.run_dir.path / "trackers.json"
        known = json.loads(ids.read_text()) if ids.is_file() else {}
        if known.get("mlflow_run_id") and known.get("mlflow_uri") == self.uri:
            self.run_id = str(known["mlflow_run_id"])
            self.client.update_run(self.run_id, status="RUNNING")
            return
        name = runner.config.name
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        run = self.client.create_run(exp_id, run_name=runner.run_dir.path.name, tags={
            "fedweave.run_dir": str(runner.run_dir.path.resolve()),
            "fedweave.algorithm": runner.config.algorithm.name})
        self.run_id = run.info.run_id
        params = [Param(k, str(v)[:6000]) for k, v in flat_config(runner.config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i: i + 100])
        runner.run_dir.write_json("trackers.json", {"mlflow_uri": self.uri,
                                                    "mlflow_run_id": self.run_id})

    def on_evaluate(self, runner: RunView, r: int, row: dict[str, Any]) -> None:
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, v, now, r + 1) for k, v in numeric(row).items()])

    def on_finish(self, runner: RunView, result: RunResult) -> None:
        if self.run_id is None:
            return
        if runner.run_dir is not None:
            self.client.log_artifact(self.run_id, str(runner.run_dir.path / "summary.json"))
        self.client.set_terminated(self.run_id, "FINISHED")

    def on_failure(self, runner: RunView, exc: BaseException) -> None:
        if self.run_id is not None:
            from fedweave.interrupt import Interrupted

            killed = isinstance(exc, KeyboardInterrupt | Interrupted)
            self.client.set_terminated(self.run_id, "KILLED" if killed else "FAILED")


@register_callback
def _tensorboard(config: Config) -> Callback | None:
    from fedweave.distributed import is_writer

    return TensorBoard() if config.output.tensorboard and is_writer() else None


@register_callback
def _mlflow(config: Config) -> Callback | None:
    from fedweave.distributed import is_writer

    return MLflow(config.output.mlflow) if config.output.mlflow and is_writer() else None
