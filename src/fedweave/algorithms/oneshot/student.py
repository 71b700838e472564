"""The student of one-shot distillation: SGD on a pool of images that grows while it trains
(reference system 003's GrowingDataset, GrowingDatasetLoader and Trainer).

An epoch is ``steps_per_epoch`` steps of ``batch_size`` images. The batches made for the
epoch (Adaptive DeepInversion against the student as it starts the epoch) join the pool and
are each trained on at once, at steps 0, ⌈S/k⌉, 2⌈S/k⌉, ... as in the seed; every other step
takes the next images of a random permutation of the pool, augmented by a random crop
(``crop_padding`` pixels of zero padding) and a horizontal flip. The loss is the class-weighted
cross-entropy on the synthesised labels or, with ``loss: kl``, T²·KL(p_ensemble ‖ p_student)
at temperature T (Hinton et al. 2015) against the teachers' mean softmax. SGD with momentum and
weight decay, MultiStepLR over epochs. Every draw comes from (seed, purpose, epoch, step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedweave.algorithms.oneshot.deepinversion import Teachers
from fedweave.config import StudentConfig
from fedweave.core.state import State
from fedweave.data.augment import random_crop_flip
from fedweave.data.federated import FederatedData
from fedweave.rng import torch_generator


@dataclass
class Pool:
    """The images the student trains on: uint8 ``[M, C, H, W]`` and int64 labels ``[M]``."""

    images: torch.Tensor
    labels: torch.Tensor

    def add(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = torch.cat([self.images, images.to(self.images.device)])
        self.labels = torch.cat([self.labels, labels.to(self.labels.device)])

    def __len__(self) -> int:
        return len(self.labels)


def generation_steps(steps: int, new_batches: int) -> list[int]:
    """The steps that train on the epoch's new batches: 0, ⌈S/k⌉, 2⌈S/k⌉, ... (< S)."""
    if new_batches <= 0:
        return []
    return list(range(0, steps, math.ceil(steps / new_batches)))[:new_batches]


class Student:
    """One model and its SGD state; ``train_epoch`` runs one epoch on a pool."""

    def __init__(self, cfg: StudentConfig, model: nn.Module, data: FederatedData, seed: int,
                 purpose: str, teachers: Teachers | None = None) -> None:
        self.cfg, self.model, self.data, self.seed = cfg, model, data, seed
        self.purpose, self.teachers = purpose, teachers
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        device = next(model.parameters()).device
        self.class_weight = None if cfg.class_weights is None else torch.tensor(
            cfg.class_weights, dtype=torch.float32, device=device)

    def lr(self, epoch: int) -> float:
        """MultiStepLR: lr · γ^(number of milestones ≤ epoch)."""
        return self.cfg.lr * self.cfg.gamma ** sum(epoch >= m for m in self.cfg.milestones)

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.cfg.loss == "kl":
            assert self.teachers is not None
            t = self.cfg.temperature
            with torch.no_grad():
                target = F.softmax(self.teachers.logits(x) / t, dim=-1).mean(0)
            log_student = F.log_softmax(logits / t, dim=-1)
            return F.kl_div(log_student, target, reduction="batchmean") * t * t
        return F.cross_entropy(logits, y, weight=self.class_weight)

    def _order(self, epoch: int, size: int, wrap: int) -> torch.Tensor:
        return torch.randperm(size, generator=torch_generator(
            self.seed, f"{self.purpose}-batches", epoch, wrap))

    def train_epoch(self, epoch: int, pool: Pool, fresh: list[tuple[torch.Tensor, torch.Tensor]]
                    ) -> dict[str, float]:
        """One epoch; ``fresh``: the epoch's new (uint8 images, labels) batches, already in
        ``pool``. Returns the mean training loss and accuracy."""
        cfg, data = self.cfg, self.data
        for group in self.opt.param_groups:
            group["lr"] = self.lr(epoch)
        at = dict(zip(generation_steps(cfg.steps_per_epoch, len(fresh)), fresh, strict=False))
        order, cursor, wrap = self._order(epoch, len(pool), 0), 0, 0
        b = min(cfg.batch_size, len(pool))
        self.model.train()
        loss_sum = correct = seen = 0.0
        for step in range(cfg.steps_per_epoch):
            if step in at:  # a new batch, trained on as it is made
                images, y = at[step]
                xb = data.features(images)
            else:
                if cursor + b > len(order):
                    wrap += 1
                    order, cursor = self._order(epoch, len(pool), wrap), 0
                idx = order[cursor: cursor + b].to(pool.images.device)
                cursor += b
                images, y = pool.images[idx], pool.labels[idx]
                if cfg.augment:
                    gen = torch_generator(self.seed, f"{self.purpose}-augment", epoch, step,
                                          device=images.device)
                    images = random_crop_flip(images, gen, cfg.crop_padding)
                xb = data.features(images)
            logits = self.model(xb)
            loss = self.loss(logits, xb, y)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            loss_sum += float(loss.detach()) * len(y)
            correct += float((logits.argmax(1) == y).sum())
            seen += len(y)
        return {"loss": loss_sum / max(seen, 1), "acc": correct / max(seen, 1)}

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor, chunk: int = 2048
                 ) -> tuple[float, float]:
        """Mean cross-entropy and accuracy on stored samples ``(x, y)``."""
        if len(y) == 0:
            return float("nan"), float("nan")
        self.model.eval()
        loss = correct = 0.0
        for i in range(0, len(y), chunk):
            logits = self.model(self.data.features(x[i: i + chunk]))
            loss += float(F.cross_entropy(logits, y[i: i + chunk], reduction="sum"))
            correct += float((logits.argmax(1) == y[i: i + chunk]).sum())
        return loss / len(y), correct / len(y)

    # -- checkpoints
    def state(self) -> State:
        momentum = {}
        for i, p in enumerate(self.model.parameters()):
            buf = self.opt.state.get(p, {}).get("momentum_buffer")
            if buf is not None:
                momentum[str(i)] = buf
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "momentum": momentum}

    def load_state(self, state: State) -> None:
        self.model.load_state_dict(state["model"])
        params = list(self.model.parameters())
        for key, buf in state.get("momentum", {}).items():
            self.opt.state[params[int(key)]]["momentum_buffer"] = buf.clone()
