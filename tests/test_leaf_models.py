"""Sequence models (char_lstm, transformer): shapes, LEAF's sizes, vmap agreement with the
loop, and runs on LEAF-format Shakespeare through federated, asynchronous and decentralized
algorithms."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_leaf_sources import write_shakespeare  # type: ignore[import-not-found]
from torch.func import functional_call, grad, vmap

from fedweave.config import ModelConfig
from fedweave.errors import UserError
from fedweave.models import build_model, num_parameters
from fedweave.plugins import load_config
from fedweave.runner import run


def test_sizes_and_outputs() -> None:
    lstm = build_model(ModelConfig(name="char_lstm"), (80,), 80)
    assert num_parameters(lstm) == 819_920  # LEAF: embedding 8, 2×256 LSTM, linear to 80
    assert lstm.lstm.num_layers == 2 and lstm.lstm.hidden_size == 256  # type: ignore[union-attr]
    tiny = build_model(ModelConfig(name="transformer"), (80,), 80)
    assert num_parameters(tiny) == 115_536
    x = torch.randint(0, 80, (3, 80)).float()
    assert lstm(x).shape == (3, 80) and tiny(x).shape == (3, 80)
    with pytest.raises(UserError, match="token-id sequences"):
        build_model(ModelConfig(name="char_lstm"), (1, 28, 28), 62)


def test_transformer_is_causal() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="transformer"), (6,), 80).eval()
    x = torch.randint(0, 80, (1, 6)).float()
    block = model.blocks[0]  # type: ignore[index]
    h = model.embed(x.long()) + model.position  # type: ignore[operator]
    changed = h.clone()
    changed[0, 4:] += 1.0  # later positions must not move earlier outputs
    assert torch.allclose(block(h)[0, :4], block(changed)[0, :4], atol=1e-6)
    assert not torch.allclose(block(h)[0, 4:], block(changed)[0, 4:])


@pytest.mark.parametrize("name", ["transformer", "char_lstm"])
def test_vmap_gradients_match_the_loop(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name), (8,), 80)
    stacked = {k: torch.stack([v.detach() + 0.01 * i for i in range(3)])
               for k, v in model.named_parameters()}
    x = torch.randint(0, 80, (3, 4, 8)).float()
    y = torch.randint(0, 80, (3, 4))

    def loss(params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
             ) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(functional_call(model, params, (xb,)), yb)

    batched = vmap(grad(loss))(stacked, x, y)
    for i in range(3):
        one = grad(loss)({k: v[i] for k, v in stacked.items()}, x[i], y[i])
        for k in one:
            assert torch.allclose(batched[k][i], one[k], atol=1e-5), k


RUNS = {"fedavg": ["algorithm.name=fedavg"],
        "fedbuff": ["algorithm.name=fedbuff", "algorithm.buffer_size=2"],
        "dsgd": ["algorithm.name=dsgd", "topology.name=ring"]}


def _run(tmp_path: Path, model: str, algorithm: str, engine: str) -> dict:
    data = tmp_path / "data"
    write_shakespeare(data, {f"ROLE_{i}": 6 + i for i in range(4)}, {f"ROLE_{i}": 2
                                                                     for i in range(4)},
                      context=8)
    cfg = load_config(None, [
        "rounds=1", "data.dataset=shakespeare", f"data.root={data}", "data.nodes=4",
        "data.partition=natural", "output.plots=false", "output.progress=false",
        f"output.dir={tmp_path / 'runs'}", "train.batch_size=4", "train.local_steps=1",
        f"model.name={model}", f"engine.name={engine}", *RUNS[algorithm]])
    summary: dict = run(cfg).summary
    return summary


def test_transformer_runs_fedavg_vectorized(tmp_path: Path) -> None:
    final = _run(tmp_path, "transformer", "fedavg", "vectorized")["final"]
    assert 0.0 <= final["test_acc"] <= 1.0 and final["test_loss"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("model", ["char_lstm", "transformer"])
@pytest.mark.parametrize("algorithm", ["fedavg", "fedbuff", "dsgd"])
def test_sequence_models_run_every_wing(tmp_path: Path, model: str, algorithm: str) -> None:
    final = _run(tmp_path, model, algorithm, "loop")["final"]
    assert 0.0 <= final["test_acc"] <= 1.0 and torch.isfinite(torch.tensor(final["test_loss"]))
