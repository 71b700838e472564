"""The cross-device workload in Flower's simulation (a contender of
``benchmarks/cross_device.py``): ``flwr.simulation.run_simulation`` on the Ray backend, one
actor per CPU (``client_resources: {num_cpus: 1}``), 1000 virtual clients with IID shards of
Fashion-MNIST, ``FedAvg(fraction_fit=0.1)``, no client-side evaluation, the global model
evaluated on the test set after every round (server-side ``evaluate_fn``, as the plain loop).

Runs in its own virtual environment (Flower pulls Ray, which fedweave does not need):

    python3 -m venv /work/venvs/flower && /work/venvs/flower/bin/pip install torch==2.13.0 \
        && /work/venvs/flower/bin/pip install "flwr[simulation]==1.42.*" pyyaml
    /work/venvs/flower/bin/python benchmarks/flower_fedavg.py \
        benchmarks/configs/cross-device-mlp.yaml [--rounds N] [--cpus 2]

Prints one JSON line: ``ray_init_s`` (starting the local Ray cluster), ``round_loop_s``
(first round's start to the last round's evaluation), ``whole_sim_s`` (the whole
``run_simulation`` call) and the final ``test_acc``.

What makes this harness finish (an earlier version of it did not finish 30 rounds in 12
minutes): the client code lives at the top level of this module and is imported by name in the
Ray actors, so Ray pickles ``client_fn`` *by reference*. Defined inside ``main()`` (in
``__main__``) it is pickled *by value* with every task, together with the module globals it
reads, so each actor process got a fresh, empty data cache with every ``fit`` and re-read and
decoded the whole Fashion-MNIST 3,000 times (100 loads for 100 fits of one round, ~1-2 s
each). The actors are also pinned to one torch thread (``OMP_NUM_THREADS=1`` in Ray's runtime
environment and ``torch.set_num_threads(1)`` in ``client_fn``), so two actors on two cores do
not oversubscribe them.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

FMNIST = Path("/usr/share/datasets/fashion-mnist")
ENV = "FLWR_BENCH_CONFIG"
_CACHE: dict[str, Any] = {}  # per process (driver and every Ray actor): data, shards


def idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


def cfg() -> dict[str, Any]:
    if "cfg" not in _CACHE:
        _CACHE["cfg"] = json.loads(os.environ[ENV])
    return _CACHE["cfg"]


def data() -> dict[str, torch.Tensor]:
    """Fashion-MNIST in [0, 1], read once per process."""
    if "x" not in _CACHE:
        _CACHE["x"] = torch.tensor(idx(FMNIST / "train-images-idx3-ubyte.gz"),
                                   dtype=torch.float32).view(-1, 784) / 255
        _CACHE["y"] = torch.tensor(idx(FMNIST / "train-labels-idx1-ubyte.gz"), dtype=torch.int64)
        _CACHE["tx"] = torch.tensor(idx(FMNIST / "t10k-images-idx3-ubyte.gz"),
                                    dtype=torch.float32).view(-1, 784) / 255
        _CACHE["ty"] = torch.tensor(idx(FMNIST / "t10k-labels-idx1-ubyte.gz"), dtype=torch.int64)
        c = cfg()
        _CACHE["shards"] = np.array_split(
            np.random.default_rng(c["seed"]).permutation(len(_CACHE["y"])), c["data"]["nodes"])
    return _CACHE


def model(c: dict[str, Any]) -> nn.Module:
    layers: list[nn.Module] = []
    width = 784
    for h in c["model"].get("hidden", []) if c["model"]["name"] == "mlp" else []:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, 10))


def get(m: nn.Module) -> list[np.ndarray]:
    return [v.detach().numpy() for v in m.state_dict().values()]


def put(m: nn.Module, arrays: list[np.ndarray]) -> None:
    m.load_state_dict({k: torch.from_numpy(np.asarray(a))
                       for k, a in zip(m.state_dict(), arrays, strict=True)})


def _client_class() -> type:
    from flwr.client import NumPyClient

    class Client(NumPyClient):  # type: ignore[misc]
        def __init__(self, cid: int) -> None:
            self.ids = torch.from_numpy(data()["shards"][cid])

        def fit(self, parameters, config):  # type: ignore[no-untyped-def]
            c, d = cfg(), data()
            local = model(c)
            put(local, parameters)
            opt = torch.optim.SGD(local.parameters(), lr=c["train"]["lr"])
            loader = DataLoader(TensorDataset(d["x"][self.ids], d["y"][self.ids]),
                                batch_size=c["train"]["batch_size"], shuffle=True)
            for xb, yb in loader:
                opt.zero_grad()
                F.cross_entropy(local(xb), yb).backward()
                opt.step()
            return get(local), len(self.ids), {}

    return Client


def client_fn(context):  # type: ignore[no-untyped-def]
    """Runs in a Ray actor; imported there by name (this module), never pickled by value."""
    torch.set_num_threads(1)
    if "client" not in _CACHE:
        _CACHE["client"] = _client_class()
    return _CACHE["client"](int(context.node_config["partition-id"])).to_client()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1,
                        help="CPUs given to Ray (one actor each)")
    args = parser.parse_args()
    c = yaml.safe_load(args.config.read_text())
    rounds = args.rounds or c["rounds"]
    os.environ[ENV] = json.dumps(c)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import flower_fedavg as app  # this file under its module name: pickled by reference
    import ray
    from flwr.client import ClientApp
    from flwr.common import Context, ndarrays_to_parameters
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg
    from flwr.simulation import run_simulation

    clients = c["data"]["nodes"]
    marks: dict[int, float] = {}
    final: dict[str, float] = {}

    def evaluate(server_round, parameters, config):  # type: ignore[no-untyped-def]
        d = data()
        m = model(c)
        put(m, parameters)
        with torch.no_grad():
            out = m(d["tx"])
            loss = float(F.cross_entropy(out, d["ty"]))
            acc = float((out.argmax(1) == d["ty"]).double().mean())
        final.update(test_acc=acc, test_loss=loss)
        marks[server_round] = time.perf_counter()
        return loss, {"accuracy": acc}

    torch.manual_seed(c["seed"])
    init = ndarrays_to_parameters(get(model(c)))

    def server_fn(context: Context) -> ServerAppComponents:
        strategy = FedAvg(fraction_fit=c["algorithm"]["clients_per_round"] / clients,
                          fraction_evaluate=0.0, min_fit_clients=2, min_available_clients=clients,
                          initial_parameters=init, evaluate_fn=evaluate)
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=rounds))

    threads1 = {k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path),
                                       ENV: os.environ[ENV], **threads1}})
    t1 = time.perf_counter()
    run_simulation(server_app=ServerApp(server_fn=server_fn),
                   client_app=ClientApp(client_fn=app.client_fn), num_supernodes=clients,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    t2 = time.perf_counter()
    ray.shutdown()
    print(json.dumps({"ray_init_s": t1 - t0, "whole_sim_s": t2 - t1,
                      "round_loop_s": marks.get(rounds, t2) - marks.get(0, t1),
                      "rounds": rounds, **final}))


if __name__ == "__main__":
    main()
