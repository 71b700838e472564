"""Byzantine peers and faulty links in decentralized runs: what a node sends, what its
neighbours accept, robust mixing and node crashes (the hooks of
``fedweave.algorithms.decentralized.base``).

- *Outgoing*: an attacker's model message ``x`` carries the attack's update relative to the
  model it had before its local step (``fedweave.robust.attacks``: gaussian, sign_flip,
  scale, alie with μ, σ over the honest nodes' updates of the step); a message hit by
  ``clock.message_corruption`` arrives filled with NaN.
- *Accepted*: a received message with a NaN or inf is rejected (the receiver keeps its last
  copy, as for a lost exchange) and counted in ``messages_rejected``; it never reaches a model.
- *Robust mixing* (``aggregator.name`` on D-SGD): node i's Σ_j W_ij x_j is replaced by the rule
  over its closed neighbourhood — its own model and the last copies from its live neighbours
  (weights W_ii, W_ij; centre x_i, so ``centered_clip`` with one iteration is ClippedGossip,
  He, Karimireddy & Jaggi 2022) — all nodes at once as masked groups.
- *Crashes* (``clock.node_crash``): a crash drawn at round r' (per (seed, "crash", r', node))
  keeps the node down for rounds r' .. r' + crash_rounds − 1; it neither steps nor exchanges,
  and the live graph's mixing matrix is recomputed so its neighbours re-normalise.
"""

from __future__ import annotations

import torch

from fedweave.aggregators import Aggregator
from fedweave.config import AttackConfig, ClockConfig
from fedweave.rng import derive_seed
from fedweave.robust.attacks import (
    MODEL_ATTACKS,
    alie_z,
    attackers,
    corrupt_updates,
    corrupted_messages,
)


def down_nodes(clock: ClockConfig, seed: int, round_index: int, n: int) -> torch.Tensor:
    """bool [n]: nodes down in ``round_index`` (a crash in one of the last crash_rounds
    rounds, the current one included)."""
    down = torch.zeros(n, dtype=torch.bool)
    if not clock.node_crash:
        return down
    for node in range(n):
        for r in range(max(0, round_index - clock.crash_rounds + 1), round_index + 1):
            if derive_seed(seed, "crash", r, node) / 2**63 < clock.node_crash:
                down[node] = True
                break
    return down


class PeerFaults:
    """Attacks on outgoing model messages, corruption on the wire, rejection on arrival."""

    def __init__(self, attack: AttackConfig, clock: ClockConfig, n: int, seed: int) -> None:
        self.attack, self.clock, self.seed = attack, clock, seed
        self.bad = attackers(attack, n, seed)
        self.model_attack = attack.name in MODEL_ATTACKS
        self.rejected = 0

    @property
    def active(self) -> bool:
        """Whether messages must travel (no W @ x shortcut)."""
        return self.model_attack or bool(self.clock.message_corruption)

    def attack_models(self, senders: torch.Tensor, steps: torch.Tensor, x_sent: torch.Tensor,
                      x_before: torch.Tensor, honest: torch.Tensor | None) -> torch.Tensor:
        """The model rows ``x_sent`` [S, P] from global ``senders`` (at their ``steps``) with
        the attackers' replaced (``x_before``: the senders' models before the local step;
        ``honest``: the honest nodes' updates of the step, for alie)."""
        bad = self.bad[senders]
        if not (self.model_attack and bool(bad.any())):
            return x_sent
        delta = x_sent - x_before
        rows = torch.nonzero(bad).flatten()
        if self.attack.name == "alie" and honest is not None:
            z = self.attack.z if self.attack.z is not None else alie_z(
                len(self.bad), int(self.bad.sum()))
            fake = (honest.mean(0) - z * honest.std(0, unbiased=False)).expand(len(rows), -1)
        else:
            one = torch.ones(1, dtype=torch.bool)
            fake = torch.cat([corrupt_updates(
                self.attack, self.seed, (int(steps[i]),), senders[i: i + 1], one,
                delta[i: i + 1]) for i in rows.tolist()])
        return x_sent.index_copy(0, rows.to(x_sent.device), x_before[rows] + fake)

    def corrupt(self, senders: torch.Tensor, receivers: torch.Tensor, steps: torch.Tensor,
                payload: torch.Tensor) -> torch.Tensor:
        """Messages hit by ``clock.message_corruption`` (keyed by step, sender, receiver)
        filled with NaN."""
        if not self.clock.message_corruption:
            return payload
        broken = torch.tensor([bool(corrupted_messages(
            self.clock, self.seed, (int(k),), s.view(1), r.view(1))[0])
            for k, s, r in zip(steps, senders, receivers, strict=True)], dtype=torch.bool)
        if not bool(broken.any()):
            return payload
        return payload.masked_fill(broken.to(payload.device).view(-1, 1), float("nan"))

    def accept(self, msg: dict[str, torch.Tensor]) -> torch.Tensor:
        """bool per message: every value finite (the others are counted and dropped)."""
        ok = torch.ones(len(next(iter(msg.values()))), dtype=torch.bool)
        for value in msg.values():
            ok &= torch.isfinite(value).all(1).cpu()
        self.rejected += int((~ok).sum())
        return ok


class NeighbourRule:
    """A robust rule over each held node's closed neighbourhood (module docstring)."""

    def __init__(self, rule: Aggregator, own: torch.Tensor, rows: int) -> None:
        self.rule = rule
        own = own.cpu()
        count = torch.bincount(own, minlength=rows)
        width = int(count.max()) if len(own) else 0
        order = torch.argsort(own, stable=True)
        start = torch.cumsum(count, 0) - count
        pos = torch.arange(len(own)) - start[own[order]]
        self.table = torch.full((rows, width), -1, dtype=torch.int64)
        self.table[own[order], pos] = order
        rule.check_rows(1 + int(count.min()) if rows else 1, "the smallest neighbourhood "
                        "(a node and its neighbours)")

    def __call__(self, x: torch.Tensor, copies: torch.Tensor, w_diag: torch.Tensor,
                 w_slot: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
        """Mixed rows [rows, P] from own rows ``x``, slot copies [S, P], mixing weights
        (``w_diag`` [rows, 1], ``w_slot`` [S, 1]) and ``live`` [S] (edge up)."""
        table = self.table.to(x.device)
        idx = table.clamp(min=0)
        group = torch.cat([x[:, None], copies[idx]], 1)
        weight = torch.cat([w_diag, w_slot[idx, 0]], 1)
        valid = torch.cat([torch.ones_like(table[:, :1], dtype=torch.bool),
                           (table >= 0) & live[idx]], 1)
        return self.rule.combine(group, weight, x, valid)
