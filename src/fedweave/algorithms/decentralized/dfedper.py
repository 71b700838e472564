"""DFedPer: FedPer's split (Arivazhagan et al. 2019, "Federated Learning with Personalization
Layers") on peers. D-SGD on the shared body, a personal head per node:

    x_i ← x_i − lr·u_i                       (local step on the node's data, body and head)
    body_i ← Σ_j W_ij body_j,   head_i unchanged

It is ``dsgd`` with ``algorithm.personal_head: true`` (``decentralized.personal``) under a name
of its own, so sweeps and scripts can list it beside the federated personalised methods
(``algorithm.name=fedper,dfedper``); ``gossip`` takes the same key.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from fedweave.algorithms.base import register_algorithm
from fedweave.algorithms.decentralized.dsgd import DSGD, DSGDConfig


class DFedPerConfig(DSGDConfig):
    name: Literal["dfedper"] = "dfedper"  # type: ignore[assignment]
    #: not a key: the head is always personal (``dsgd`` is the same algorithm without it)
    personal_head: ClassVar[bool] = True  # type: ignore[misc]


@register_algorithm("dfedper", DFedPerConfig)
class DFedPer(DSGD):
    """D-SGD mixing the body only; each node keeps its head (module docstring)."""
