"""Local training: every client trains its own model on its own shard, nothing is exchanged
until the end (the teachers of one-shot federated learning, reference system 003's
train_teachers.py).

Round r trains all N clients' models together for ``train.local_epochs`` (one call of the
local trainer over the stacked ``[N, P]`` models: vectorized for GroupNorm / norm-free models,
one model at a time for BatchNorm ones), then scores each model on its client's own validation
split. The model kept for client i is the one of the round with the best validation accuracy
so far (the seed keeps the best *test* epoch). Each client's model starts from its own
initialisation, drawn from (seed, "init:local", i), as the seed builds one fresh model per
teacher. The teachers reach the server once, after the last round (``bytes_up``).
"""

from __future__ import annotations

from typing import Any, Literal

import torch

from fedweave.algorithms.base import Algorithm, RoundResult, register_algorithm
from fedweave.config import AlgorithmConfig
from fedweave.context import RunContext
from fedweave.core.population import Buffers, flat_params, model_buffers
from fedweave.core.state import State, section
from fedweave.errors import UserError
from fedweave.models import build_model
from fedweave.rng import derive_seed
from fedweave.sim.clock import job_time, node_profiles
from fedweave.training.batches import local_steps


class LocalConfig(AlgorithmConfig):
    """No keys: what a round does is set by ``train`` and ``rounds``."""

    name: Literal["local"] = "local"


def client_inits(ctx: RunContext) -> tuple[torch.Tensor, Buffers]:
    """``[N, P]`` initial parameters (and buffers): client i's from (seed, "init:local", i)."""
    params, buffers = [], []
    for i in range(ctx.data.nodes):
        torch.manual_seed(derive_seed(ctx.seed, "init:local", i))
        model = build_model(ctx.config.model, ctx.data.input_shape, ctx.data.num_classes)
        model = model.to(ctx.device)
        params.append(flat_params(model))
        buffers.append(model_buffers(model))
    return torch.stack(params), {k: torch.stack([b[k] for b in buffers]) for k in buffers[0]}


@register_algorithm("local", LocalConfig)
class LocalTraining(Algorithm):
    """N independent models; ``best`` holds each client's best-by-validation one."""

    per_node_models = True

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        cfg = ctx.config
        if cfg.clock.client_dropout:
            raise UserError("clock.client_dropout: algorithm.name=local trains every client "
                            "once, with no rounds of exchange to drop out of; remove it")
        if cfg.distill != type(cfg.distill)():
            raise UserError("the distill section acts in `fedweave distill CONFIG`; `fedweave "
                            "run` would train the teachers only: use fedweave distill")
        self.params, self.buffers = client_inits(ctx)
        n = ctx.data.nodes
        self.best_params = self.params.clone()
        self.best_buffers = {k: v.clone() for k, v in self.buffers.items()}
        self.best_val = torch.full((n,), -1.0, dtype=torch.float64)
        self.best_round = torch.zeros(n, dtype=torch.int64)
        self.profile = node_profiles(cfg.clock, n, ctx.seed)

    def validation_accuracy(self) -> torch.Tensor:
        """[N] accuracy of each client's current model on its own validation split (its
        training shard when the split is empty)."""
        data, engine = self.ctx.data, self.ctx.engine
        out = torch.zeros(data.nodes, dtype=torch.float64)
        for i, idx in enumerate(data.val_idx):
            idx = idx if len(idx) else data.train_idx[i]
            buf = {k: v[i: i + 1] for k, v in self.buffers.items()}
            out[i] = engine.evaluate(self.params[i: i + 1], buf, *data.take_inputs(idx))[1][0]
        return out

    def round(self, r: int) -> RoundResult:
        ctx = self.ctx
        nodes = torch.arange(ctx.data.nodes)
        local = ctx.trainer.train(nodes, self.params, self.buffers, r, ctx.lr(r))
        self.params, self.buffers = local.params, local.buffers
        val = self.validation_accuracy()
        better = val > self.best_val
        rows = better.to(self.params.device)
        self.best_params[rows] = self.params[rows]
        for k, v in self.buffers.items():
            self.best_buffers[k][rows] = v[rows]
        self.best_val = torch.where(better, val, self.best_val)
        self.best_round = torch.where(better, torch.full_like(self.best_round, r + 1),
                                      self.best_round)
        last = r == ctx.config.rounds - 1
        sizes = ctx.data.sizes
        samples = local_steps(ctx.config.train, sizes) * sizes.clamp(
            max=ctx.config.train.batch_size)
        up = ctx.model_bytes if last else 0
        down = ctx.model_bytes if r == 0 else 0
        times = job_time(self.profile, nodes, samples.double(), down, up,
                         ctx.config.clock.latency_s)
        assert isinstance(times, torch.Tensor)
        return RoundResult(*local.mean_train(), bytes_up=up * len(nodes),
                           bytes_down=down * len(nodes), sim_time=float(times.max()),
                           node_train={"loss": local.loss.cpu(), "acc": local.acc.cpu()})

    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        return self.params, self.buffers, [str(i) for i in range(self.ctx.data.nodes)]

    def best_models(self) -> tuple[torch.Tensor, Buffers]:
        """Each client's model of its best validation round."""
        return self.best_params, self.best_buffers

    def info(self) -> dict[str, Any]:
        return {"selected": {"by": "val_acc", "round": self.best_round.tolist(),
                             "val_acc": self.best_val.tolist()}}

    def state(self) -> State:
        return {"params": self.params, "buffers": self.buffers,
                "best": {"params": self.best_params, "buffers": self.best_buffers,
                         "val_acc": self.best_val, "round": self.best_round}}

    def load_state(self, state: State) -> None:
        self.params = state["params"]
        self.buffers = section(state, "buffers")
        best = section(state, "best")
        self.best_params, self.best_buffers = best["params"], section(best, "buffers")
        self.best_val, self.best_round = best["val_acc"], best["round"]

