"""Local training of a cohort: the engine gives gradients of the objective's data term, the
parameter terms add theirs, the functional optimizer steps."""

from __future__ import annotations

import torch

from fedweave.config import TrainConfig
from fedweave.core.population import Buffers
from fedweave.data.federated import FederatedData
from fedweave.training.batches import batch_schedule, local_steps
from fedweave.training.objectives import L2, Objective
from fedweave.training.optim import FunctionalOptimizer
from fedweave.training.protocol import GradientEngine, LocalResult

DEFAULT_OBJECTIVE = Objective()


class LocalTrainer:
    """Local SGD of a cohort: the engine gives gradients, the functional optimizer steps."""

    def __init__(self, engine: GradientEngine, data: FederatedData, cfg: TrainConfig) -> None:
        self.engine, self.data, self.cfg = engine, data, cfg
        self.optimizer = FunctionalOptimizer(cfg)

    def objective(self, objective: Objective | None) -> Objective:
        """The client objective with the run's ½λ‖θ‖² (``train.l2_lambda``) first."""
        obj = objective or DEFAULT_OBJECTIVE
        return obj.with_terms(L2(self.cfg.l2_lambda)) if self.cfg.l2_lambda else obj

    def train(self, nodes: torch.Tensor, params: torch.Tensor, buffers: Buffers,
              round_index: int, lr: float, objective: Objective | None = None, *,
              width: int | None = None, batch_keys: torch.Tensor | None = None
              ) -> LocalResult:
        """Train ``params[K]`` (one row per node in ``nodes``; not modified: training runs on
        one working copy, updated in place) for the round on ``objective`` (default: cross-
        entropy). ``width``: the padded batch width of the whole cohort (a distributed rank
        training part of it passes the cohort's). ``batch_keys[k]``: row k draws its batches
        as round ``batch_keys[k]`` instead of ``round_index`` (asynchronous jobs).

        Per step: g ← ∇ data term (engine) + Σ ∇ parameter terms; x ← optimizer(x, g)."""
        obj = self.objective(objective)
        sizes = self.data.sizes[nodes.cpu()]
        steps = local_steps(self.cfg, sizes)
        batches = batch_schedule(self.data, nodes.cpu(), steps, self.cfg.batch_size,
                                 (round_index,), width=width,
                                 shuffle=self.cfg.epoch_samples is not None, row_keys=batch_keys)
        # a whole-round engine (the fused one) trains the same batches itself; looked up on
        # the class, so a wrapper that forwards attributes (DP-SGD, distributed) never hands
        # its inner engine's round over and skips its own gradients
        if getattr(type(self.engine), "train_round", None) is not None and \
                self.engine.supports(obj):  # type: ignore[attr-defined]
            return self.engine.train_round(  # type: ignore[attr-defined]
                self.cfg, self.optimizer, nodes, params, buffers, batches, lr, obj)
        params = params.clone()
        state = self.optimizer.init(params)
        loss_sum = torch.zeros(len(nodes), dtype=params.dtype, device=params.device)
        correct = torch.zeros_like(loss_sum)
        seen = torch.zeros_like(loss_sum)
        steps_dev = steps.to(params.device)
        for s in range(batches.idx.shape[1]):
            active = steps_dev > s
            out = self.engine.grads(params, buffers, batches.idx[:, s], batches.weight[:, s],
                                    active, (round_index, s), nodes, obj.data)
            g = out.grads  # a fresh tensor: the parameter terms are added in place
            obj.add_param_grads(g, params)
            params = self.optimizer.step(params, g, state, lr, active, obj.mask, inplace=True)
            buffers = out.buffers
            act = active.to(params.dtype)
            loss_sum += out.loss * out.count * act
            correct += out.correct * act
            seen += out.count * act
        seen = seen.clamp(min=1)
        return LocalResult(params, buffers, sizes.to(params.dtype).to(params.device), steps,
                           loss_sum / seen, correct / seen)
