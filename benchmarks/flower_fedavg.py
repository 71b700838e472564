"""The cross-device workload in Flower's simulation (a contender of
``benchmarks/cross_device.py``): ``flwr.simulation.run_simulation`` with the Ray backend, one
CPU per client (``client_resources: {num_cpus: 1}``), 1000 virtual clients with IID shards of
Fashion-MNIST, ``FedAvg(fraction_fit=0.1)``, no client-side evaluation, the global model
evaluated on the test set after the last round (server-side ``evaluate_fn``).

Runs in its own virtual environment (Flower pulls Ray, not needed by fedweave):

    python -m venv .venv-flower && .venv-flower/bin/pip install torch==2.13.0 "flwr[simulation]"
    .venv-flower/bin/python benchmarks/flower_fedavg.py benchmarks/configs/cross-device-mlp.yaml

Prints one JSON line: the seconds inside ``run_simulation`` and the final test accuracy.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FMNIST = Path("/usr/share/datasets/fashion-mnist")
CFG: dict = {}


def idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


_DATA: dict[str, torch.Tensor] = {}


def data() -> dict[str, torch.Tensor]:
    """Fashion-MNIST once per (Ray worker) process."""
    if not _DATA:
        _DATA["x"] = torch.tensor(idx(FMNIST / "train-images-idx3-ubyte.gz"),
                                  dtype=torch.float32).view(-1, 784) / 255
        _DATA["y"] = torch.tensor(idx(FMNIST / "train-labels-idx1-ubyte.gz"), dtype=torch.int64)
        _DATA["tx"] = torch.tensor(idx(FMNIST / "t10k-images-idx3-ubyte.gz"),
                                   dtype=torch.float32).view(-1, 784) / 255
        _DATA["ty"] = torch.tensor(idx(FMNIST / "t10k-labels-idx1-ubyte.gz"), dtype=torch.int64)
    return _DATA


def model(cfg: dict) -> nn.Module:
    layers: list[nn.Module] = []
    width = 784
    for h in cfg["model"].get("hidden", []) if cfg["model"]["name"] == "mlp" else []:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def get(m: nn.Module) -> list[np.ndarray]:
    return [v.detach().numpy() for v in m.state_dict().values()]


def put(m: nn.Module, arrays: list[np.ndarray]) -> None:
    m.load_state_dict({k: torch.from_numpy(a) for k, a in zip(m.state_dict(), arrays, strict=True)})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config", type=Path)
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args()
    cfg = yaml.safe_load(args.config.read_text())
    rounds = args.rounds or cfg["rounds"]
    os.environ["FLWR_BENCH_CONFIG"] = json.dumps(cfg)

    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    clients = cfg["data"]["nodes"]
    shards = np.array_split(np.random.default_rng(cfg["seed"]).permutation(60000), clients)

    class Client(NumPyClient):
        def __init__(self, cid: int) -> None:
            self.ids = torch.from_numpy(shards[cid])

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            d = data()
            local = model(cfg)
            put(local, parameters)
            opt = torch.optim.SGD(local.parameters(), lr=cfg["train"]["lr"])
            loader = DataLoader(TensorDataset(d["x"][self.ids], d["y"][self.ids]),
                                batch_size=cfg["train"]["batch_size"], shuffle=True)
            for xb, yb in loader:
                opt.zero_grad()
                F.cross_entropy(local(xb), yb).backward()
                opt.step()
            return get(local), len(self.ids), {}

    def client_fn(context: Context):  # type: ignore[no-untyped-def]
        torch.set_num_threads(1)
        return Client(int(context.node_config["partition-id"])).to_client()

    final: dict[str, float] = {}

    def evaluate(server_round, parameters, config):  # type: ignore[no-untyped-def]
        if server_round == rounds:
            d = data()
            m = model(cfg)
            put(m, parameters)
            with torch.no_grad():
                final["test_acc"] = float((m(d["tx"]).argmax(1) == d["ty"]).double().mean())
        return None

    torch.manual_seed(cfg["seed"])
    init = ndarrays_to_parameters(get(model(cfg)))

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(fraction_fit=cfg["algorithm"]["clients_per_round"] / clients,
                          fraction_evaluate=0.0, min_fit_clients=2, min_available_clients=clients,
                          initial_parameters=init, evaluate_fn=evaluate)
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    t0 = time.perf_counter()
    run_simulation(server_app=ServerApp(server_fn=server_fn),
                   client_app=ClientApp(client_fn=client_fn), num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    print(json.dumps({"round_loop_s": time.perf_counter() - t0, **final}))


if __name__ == "__main__":
    main()
