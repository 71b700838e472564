"""Per-client state kept across rounds, stacked: one ``[S, D]`` tensor for the S clients seen.

Personalised and variance-reduced methods keep a vector per client (a personal head, a
control variate, a dual, a previous local model). With N clients of which a cohort of k train
each round, the store holds a ``slot[N]`` index (int32, −1 = never seen) and the rows of the
clients seen so far, grown by doubling; ``gather`` materialises only the cohort's ``[k, D]``
rows (a default row for clients not seen yet) and ``scatter`` writes them back. No Python
object per client; memory is 4·N bytes plus S·D floats, so it grows with the clients that have
actually trained, never with N·D. ``state``/``load`` give the exact checkpoint form.
"""

from __future__ import annotations

import torch

from fedweave.core.state import State


class ClientStore:
    """Rows of ``width`` floats for the clients seen so far; see the module docstring."""

    def __init__(self, clients: int, width: int, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu") -> None:
        self.width = width
        self.slot = torch.full((clients,), -1, dtype=torch.int32, device=device)
        self.rows = torch.empty((0, width), dtype=dtype, device=device)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def seen(self, clients: torch.Tensor) -> torch.Tensor:
        """``[k]`` bool: which of ``clients`` have a stored row."""
        return self.slot[clients.to(self.slot.device).long()] >= 0

    def gather(self, clients: torch.Tensor, default: torch.Tensor | None = None) -> torch.Tensor:
        """``[k, D]`` rows of ``clients`` (a copy); unseen clients get ``default`` (``[D]``;
        zeros when omitted)."""
        idx = self.slot[clients.to(self.slot.device).long()].long()
        fill = (torch.zeros(self.width, dtype=self.rows.dtype, device=self.rows.device)
                if default is None else default.to(self.rows))
        out = fill.expand(len(idx), self.width).clone()
        known = idx >= 0
        if bool(known.any()):
            out[known] = self.rows[idx[known]]
        return out

    def scatter(self, clients: torch.Tensor, values: torch.Tensor) -> None:
        """Store ``values[j]`` as the row of ``clients[j]`` (new clients get a slot)."""
        clients = clients.to(self.slot.device).long()
        new = clients[self.slot[clients] < 0].unique()
        if len(new):
            need = self.count + len(new)
            if need > len(self.rows):
                grown = torch.empty((max(need, 2 * len(self.rows), 16), self.width),
                                    dtype=self.rows.dtype, device=self.rows.device)
                grown[:self.count] = self.rows[:self.count]
                self.rows = grown
            self.slot[new] = torch.arange(self.count, need, dtype=torch.int32,
                                          device=self.slot.device)
            self.count = need
        self.rows[self.slot[clients].long()] = values.to(self.rows)

    def nbytes(self) -> int:
        """Bytes held: the slot index plus the allocated rows."""
        return self.slot.numel() * self.slot.element_size() + \
            self.rows.numel() * self.rows.element_size()

    def state(self) -> State:
        """Checkpoint form: the slot index and the used rows (exact on ``load``)."""
        return {"slot": self.slot, "rows": self.rows[:self.count]}

    def load(self, state: State) -> None:
        """Restore from ``state()``."""
        self.slot = state["slot"].to(self.slot)
        self.rows = state["rows"].to(self.rows).clone()
        self.count = len(self.rows)
