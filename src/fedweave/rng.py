"""Deterministic random streams.

Every random choice draws from a generator derived from ``(seed, purpose, round, node)``, never
from a global RNG or execution order, so results do not depend on engine, thread count or
process count.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch


def derive_seed(seed: int, purpose: str, *keys: int) -> int:
    """A 63-bit seed from the root seed, a purpose string and integer keys (round, node, ...)."""
    text = f"{seed}|{purpose}|" + "|".join(str(int(k)) for k in keys)
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") >> 1


def torch_generator(seed: int, purpose: str, *keys: int, device: str | torch.device = "cpu"
                    ) -> torch.Generator:
    """A torch generator seeded from ``derive_seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, purpose, *keys))
    return g


def numpy_rng(seed: int, purpose: str, *keys: int) -> np.random.Generator:
    """A numpy generator seeded from ``derive_seed``."""
    return np.random.default_rng(derive_seed(seed, purpose, *keys))


def seed_dropout(seed: int, device: torch.device) -> None:
    """Seed the global generator that dropout draws from on ``device``. On a CPU this seeds
    only the CPU generator (the same draws as ``torch.manual_seed``, without its per-call
    bookkeeping for devices that are not in use, which costs milliseconds a call when a
    process runs thousands of small steps); elsewhere it is ``torch.manual_seed``."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)
