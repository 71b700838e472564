"""Clustered FL by k-means on client models (reference system 004, after "federated learning through
distance-based clustering").

Each round every participating client trains from its cluster's model; the server flattens the
returned models, reduces them to ``pca_dim`` dimensions with PCA, clusters them with k-means
(k-means++, RNG from (seed, "kmeans", round)) and keeps one model per cluster:
x_c ← x_c + η·(Σ_{i∈c} n_i x_i / Σ_{i∈c} n_i − x_c).
Fixes of the seed: members are weighted by their own n_i (the seed used the first client's
share for everybody), and the seed's ``lambda`` multiplier is the general server learning rate
η. New k-means labels are matched to the previous clusters (Hungarian, most shared members) so a
cluster keeps its identity across rounds.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
import torch
from pydantic import Field

from fedweave.algorithms.base import RoundResult, register_algorithm
from fedweave.algorithms.federated.base import CohortAlgorithm
from fedweave.algorithms.federated.sampling import CohortConfig
from fedweave.config import AlgorithmConfig, RootView
from fedweave.context import RunContext
from fedweave.core.population import Buffers, mean_buffers, stack_buffers
from fedweave.core.state import State, section
from fedweave.rng import derive_seed


class ClusteredConfig(CohortConfig):
    name: Literal["clustered"] = "clustered"
    uses_aggregator: ClassVar[bool] = True
    k: int = Field(3, ge=1, description="number of clusters; more than the clients sampled "
                   "per round (clients_per_round, or fraction × data.nodes) is refused. A round "
                   "whose arrived clients are fewer (client_dropout) clusters them into as "
                   "many clusters as there are clients")
    pca_dim: int = Field(2, ge=1, description="PCA dimensions the client models are reduced "
                         "to before k-means")
    server_lr: float = Field(1.0, gt=0, description="server step η toward each cluster's "
                             "aggregate (reference system 004's lambda, generalised)")

    def check(self, config: RootView) -> None:
        super().check(config)
        cohort = self.cohort(config.data.nodes)
        if self.k > cohort:
            raise ValueError(f"algorithm.k={self.k} clusters exceed the {cohort} clients sampled "
                             "per round: lower algorithm.k or sample more clients")


@register_algorithm("clustered", ClusteredConfig)
class Clustered(CohortAlgorithm):
    """Cluster models on the global test set mix clients of other clusters, so a clustered
    run's headline is each client's cluster model on the client's own validation split
    (mean over clients; ``output.client_eval`` picks the clients)."""

    config: ClusteredConfig
    headline = ("clients_val_acc_mean", "per-client accuracy (val, own cluster model)")

    def __init__(self, ctx: RunContext, config: AlgorithmConfig) -> None:
        super().__init__(ctx, config)
        k = self.config.k
        self.x = ctx.init_params.unsqueeze(0).repeat(k, 1)
        self.cluster_buffers = stack_buffers(ctx.init_buffers, k)
        self.assign = torch.zeros(ctx.data.nodes, dtype=torch.int64)
        #: (clients, cluster of each) decided in the last round (``clusters.csv``)
        self.members = (torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int64))

    def round_clusters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The clients clustered in the last round and the cluster each joined."""
        return self.members

    def _cluster(self, models: torch.Tensor, r: int) -> np.ndarray:
        from sklearn.cluster import KMeans  # imported on use: keeps start-up light
        from sklearn.decomposition import PCA

        k = min(self.config.k, len(models))
        if k == 1:
            return np.zeros(len(models), dtype=np.int64)
        feats = models.double().cpu().numpy()
        dim = min(self.config.pca_dim, len(models) - 1, feats.shape[1])
        reduced = PCA(n_components=dim, random_state=0).fit_transform(feats)
        km = KMeans(n_clusters=k, init="k-means++", n_init=10,
                    random_state=derive_seed(self.ctx.seed, "kmeans", r) % 2**32)
        return km.fit_predict(reduced)

    def _match(self, labels: np.ndarray, before: torch.Tensor) -> torch.Tensor:
        """New k-means labels → cluster ids: the Hungarian matching with the most members
        shared with the previous assignment ``before``."""
        from scipy.optimize import linear_sum_assignment

        overlap = np.zeros((labels.max() + 1, self.config.k))
        np.add.at(overlap, (labels, before.numpy()), 1)
        rows, cols = linear_sum_assignment(-overlap)
        mapping = dict(zip(rows.tolist(), cols.tolist(), strict=True))
        return torch.tensor([mapping[int(label)] for label in labels], dtype=torch.int64)

    def round(self, r: int) -> RoundResult:
        ctx, cfg = self.ctx, self.config
        plan = self.plan(r)
        cohort = plan.clients
        before = self.assign[cohort]
        local = ctx.trainer.train(cohort.to(ctx.device), self.x[before],
                                  {k: v[before] for k, v in self.cluster_buffers.items()}, r,
                                  ctx.lr(r))
        if len(cohort) == 0:
            return self.result(plan, local)
        if bool(torch.isfinite(local.params).all()):
            after = self._match(self._cluster(local.params, r), before)
        else:  # diverged: no clustering; the NaN reaches the cluster models and the runner's
            after = before.clone()  # check stops the run with its one line
        x = self.x.clone()
        for c in after.unique().tolist():
            members = after == c
            avg = self.aggregate(local.params[members], local.num_samples[members], self.x[c])
            x[c] = self.x[c] + cfg.server_lr * (avg - self.x[c])
            for name, buf in mean_buffers({k: v[members] for k, v in local.buffers.items()},
                                          local.num_samples[members]).items():
                self.cluster_buffers[name][c] = buf
        self.x = x
        self.assign[cohort] = after
        self.members = (cohort.cpu().clone(), after)
        out = self.result(plan, local)
        out.extras["clusters_used"] = float(len(after.unique()))
        return out

    def models(self) -> tuple[torch.Tensor, Buffers, list[str]]:
        return self.x, self.cluster_buffers, [f"cluster{c}" for c in range(self.config.k)]

    def client_models(self) -> torch.Tensor:
        """Each client uses its cluster's model."""
        return self.assign

    def model_weights(self) -> torch.Tensor:
        """Clusters weigh by the training samples of the clients assigned to them."""
        sizes = self.ctx.data.sizes.to(torch.float64)
        return torch.zeros(self.config.k, dtype=torch.float64).index_add_(0, self.assign, sizes)

    def state(self) -> State:
        return {"x": self.x, "assign": self.assign, "buffers": self.cluster_buffers,
                "clock": self.clock.state()}

    def load_state(self, state: State) -> None:
        self.x, self.assign = state["x"], state["assign"]
        self.cluster_buffers = section(state, "buffers")
        self.clock.load_state(section(state, "clock"))
