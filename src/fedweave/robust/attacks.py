"""Byzantine attacks: who attacks and what an attacker sends (the ``attack`` config section).

The attackers are fixed for the run: ``attack.nodes``, or round(fraction·N) nodes drawn without
replacement from (seed, "attackers"). *Model attacks* replace an attacker's update
Δ = x_sent − x_start (a client's trained model minus the global model it started from; a
peer's model after its local step minus the one before it):

    gaussian    Δ ~ N(0, std²·I)                 (noise keyed by (seed, "attack", round/step, node))
    sign_flip   −k·Δ
    scale       k·Δ                              (boosted update / model replacement,
                                                  Bagdasaryan et al. 2020)
    alie        μ − z·σ                          ("a little is enough", Baruch et al. 2019: μ, σ
                                                  the coordinate-wise mean and standard deviation
                                                  of the honest updates sent together with it;
                                                  z_max = Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − m for
                                                  n senders of which m attack)

*Data attacks* (``fedweave.robust.data``) corrupt the attackers' training shards instead.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from fedweave.config import AttackConfig, ClockConfig
from fedweave.core.population import Buffers
from fedweave.errors import UserError
from fedweave.rng import derive_seed, numpy_rng, torch_generator
from fedweave.training.objectives import Objective
from fedweave.training.protocol import LocalResult
from fedweave.training.trainer import LocalTrainer

MODEL_ATTACKS = ("gaussian", "sign_flip", "scale", "alie")
DATA_ATTACKS = ("label_flip", "noisy_labels", "input_noise")


def attackers(cfg: AttackConfig, n: int, seed: int) -> torch.Tensor:
    """bool [n]: the run's attacker nodes (none when ``attack.name`` is null)."""
    mask = torch.zeros(n, dtype=torch.bool)
    if cfg.name is None:
        return mask
    if cfg.nodes is not None:
        bad = [i for i in cfg.nodes if not 0 <= i < n]
        if bad:
            raise UserError(f"attack.nodes: {bad[0]} is not a node of 0..{n - 1} (data.nodes={n})")
        mask[torch.tensor(cfg.nodes, dtype=torch.int64)] = True
        return mask
    count = round(cfg.fraction * n)
    if count == 0:
        raise UserError(f"attack.fraction={cfg.fraction} of data.nodes={n} is no node: raise "
                        "it or name attack.nodes")
    mask[torch.from_numpy(numpy_rng(seed, "attackers").choice(n, count, replace=False))] = True
    return mask


def attack_record(cfg: AttackConfig, n: int, seed: int) -> dict[str, Any]:
    """summary.json's ``attack`` entry (empty without an attack)."""
    if cfg.name is None:
        return {}
    nodes = torch.nonzero(attackers(cfg, n, seed)).flatten().tolist()
    return {"attack": {"name": cfg.name, "nodes": nodes, "count": len(nodes)}}


def alie_z(n: int, m: int) -> float:
    """Baruch et al.'s z_max for m attackers among n senders (∞ capped at Φ⁻¹(1 − 1e-6))."""
    s = math.floor(n / 2 + 1) - m
    p = min((n - s) / n, 1 - 1e-6)
    return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))  # Φ⁻¹(p)


def corrupt_updates(cfg: AttackConfig, seed: int, key: tuple[int, ...], nodes: torch.Tensor,
                    bad: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The updates ``delta[K, P]`` as sent: rows where ``bad[K]`` are replaced by the attack's
    (``nodes[K]``: the senders' ids, ``key``: round or step, for the noise streams)."""
    if cfg.name not in MODEL_ATTACKS or not bool(bad.any()):
        return delta
    rows = torch.nonzero(bad).flatten()
    if cfg.name == "gaussian":
        fake = torch.stack([
            torch.randn(delta.shape[1], generator=torch_generator(
                seed, "attack", *key, int(nodes[i]))).to(delta) for i in rows.tolist()]) * cfg.std
    elif cfg.name == "sign_flip":
        fake = -cfg.scale * delta[rows]
    elif cfg.name == "scale":
        fake = cfg.scale * delta[rows]
    else:  # alie
        honest = delta[~bad] if bool((~bad).any()) else delta[bad]
        z = cfg.z if cfg.z is not None else alie_z(len(delta), len(rows))
        mu, sigma = honest.mean(0), honest.std(0, unbiased=False)
        fake = (mu - z * sigma).expand(len(rows), -1)
    return delta.index_copy(0, rows.to(delta.device), fake.to(delta.device))


def corrupted_messages(clock: ClockConfig, seed: int, key: tuple[int, ...],
                       senders: torch.Tensor, receivers: torch.Tensor | None = None
                       ) -> torch.Tensor:
    """bool per message: it arrives with NaN values (``clock.message_corruption``, keyed by
    (seed, "corrupt", *key, sender[, receiver]); only senders in ``clock.corrupt_nodes``)."""
    out = torch.zeros(len(senders), dtype=torch.bool)
    p = clock.message_corruption
    if not p:
        return out
    allowed = None if clock.corrupt_nodes is None else set(clock.corrupt_nodes)
    for i, s in enumerate(senders.tolist()):
        if allowed is not None and s not in allowed:
            continue
        ends = (s,) if receivers is None else (s, int(receivers[i]))
        out[i] = derive_seed(seed, "corrupt", *key, *ends) / 2**63 < p
    return out


class Uplink(LocalTrainer):
    """A federated trainer whose results are what the clients *send*: the attackers' updates
    replaced by the attack, and uploads hit by ``clock.message_corruption`` filled with NaN
    (the aggregator rejects them). Wraps the run's trainer (local or distributed), so the rows
    are complete when the attack sees them."""

    def __init__(self, inner: LocalTrainer, attack: AttackConfig, clock: ClockConfig,
                 seed: int) -> None:
        super().__init__(inner.engine, inner.data, inner.cfg)
        self.inner, self.attack, self.clock, self.seed = inner, attack, clock, seed
        self.bad = attackers(attack, inner.data.nodes, seed)

    def train(self, nodes: torch.Tensor, params: torch.Tensor, buffers: Buffers,
              round_index: int, lr: float, objective: Objective | None = None, *,
              width: int | None = None, batch_keys: torch.Tensor | None = None
              ) -> LocalResult:
        """The inner trainer's result with the attackers' and corrupted rows replaced; the
        draws are keyed by (round,) or, for asynchronous jobs trained together, by each row's
        own job key (``batch_keys``), so a job's upload does not depend on its companions."""
        local = self.inner.train(nodes, params, buffers, round_index, lr, objective,
                                 width=width, batch_keys=batch_keys)
        if len(nodes) == 0:
            return local
        keys = (torch.full((len(nodes),), round_index, dtype=torch.int64)
                if batch_keys is None else batch_keys.cpu())
        sent = local.params
        for key in keys.unique().tolist():
            rows = (keys == key).nonzero().view(-1)
            if len(rows) != len(nodes):
                sent = sent.clone() if sent is local.params else sent
                sent[rows.to(sent.device)] = self._upload(key, nodes.cpu()[rows],
                                                          params[rows.to(params.device)],
                                                          sent[rows.to(sent.device)])
            else:
                sent = self._upload(key, nodes.cpu(), params, sent)
        return replace(local, params=sent) if sent is not local.params else local

    def _upload(self, key: int, ids: torch.Tensor, start: torch.Tensor, sent: torch.Tensor
                ) -> torch.Tensor:
        """What the rows ``ids`` (trained from ``start`` to ``sent``) upload."""
        bad = self.bad[ids]
        if self.attack.name in MODEL_ATTACKS and bool(bad.any()):
            delta = corrupt_updates(self.attack, self.seed, (key,), ids,
                                    bad.to(sent.device), sent - start)
            sent = torch.where(bad.to(sent.device).view(-1, 1), start + delta, sent)
        broken = corrupted_messages(self.clock, self.seed, (key,), ids)
        if bool(broken.any()):
            sent = sent.masked_fill(broken.to(sent.device).view(-1, 1), float("nan"))
        return sent


def uplink(trainer: LocalTrainer, attack: AttackConfig, clock: ClockConfig, seed: int
           ) -> LocalTrainer:
    """``trainer`` wrapped in an ``Uplink`` when a model attack or message corruption acts."""
    if attack.name in MODEL_ATTACKS or clock.message_corruption:
        return Uplink(trainer, attack, clock, seed)
    return trainer
