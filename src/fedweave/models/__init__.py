"""The model zoo: a registry of builders ``(cfg, input_shape, num_classes) -> nn.Module``.

Built-in names: logistic, mlp, cnn, lenet, conv2, vgg11, resnet18, resnet32, resnet50,
squeezenet; for token sequences char_lstm and transformer (``models.sequence``). Options
(where they make sense): ``cfg.norm`` batch | group | none, ``cfg.width`` (every hidden width
is ``round(base × width)``, at least 1), ``cfg.dropout`` (inside), ``cfg.last_dropout``
(before the classifier), ``cfg.stem`` (ResNets). With norm group or none every model is pure
(no buffers changed in forward, no in-place ops), so it can be run with
``torch.func.functional_call`` under ``torch.func.vmap`` over stacked parameters.
Initialisation is PyTorch's default, drawn from the global torch RNG. Each built-in's module
is imported when a run first asks for its name (``MODELS.get``).
"""

from __future__ import annotations

import torch
from torch import nn

from fedweave.config import ModelConfig
from fedweave.errors import UserError
from fedweave.memory import require_memory
from fedweave.models.base import MODELS, Builder, register_model

__all__ = ["MODELS", "Builder", "build_model", "has_dropout", "num_parameters",
           "register_model", "uses_batchnorm"]


#: float32 copies of a model's parameters a run holds at least (the model, its gradient, the
#: global model, an optimizer moment)
MODEL_COPIES = 4


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build ``cfg.name`` for inputs of ``input_shape`` (no batch dim); unknown names raise
    ``UserError`` listing the choices. Seed the global torch RNG first for reproducibility.

    The model is first built on PyTorch's ``meta`` device (shapes only, no memory, no random
    draws), so one that cannot fit (``model.width=1e6``, ``model.hidden=[10**9]``, a 10⁷-feature
    input to an MLP) is refused with its size before anything is allocated."""
    builder = MODELS.get(cfg.name)
    check_model_size(builder, cfg, tuple(input_shape), num_classes)
    return builder(cfg, tuple(input_shape), num_classes)


def check_model_size(builder: Builder, cfg: ModelConfig, input_shape: tuple[int, ...],
                     num_classes: int) -> None:
    """``UserError`` when ``MODEL_COPIES`` float32 copies of the model's parameters exceed
    the memory available (a plugin builder that cannot run on the meta device is not
    checked)."""
    try:
        with torch.device("meta"):
            shapes = builder(cfg, input_shape, num_classes)
    except UserError:
        raise
    except Exception:  # a builder that needs real tensors: no estimate
        return
    count = sum(p.numel() for p in shapes.parameters()) + \
        sum(b.numel() for b in shapes.buffers())
    require_memory(count * 4 * MODEL_COPIES, f"model.name={cfg.name} ({count:,} parameters "
                   f"for inputs {tuple(input_shape)}, {MODEL_COPIES} copies)",
                   "choose a smaller model (model.width, model.hidden) or fewer input features")


def uses_batchnorm(model: nn.Module) -> bool:
    """True if the model has a BatchNorm layer (its training-mode forward is not vmap-safe)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def has_dropout(model: nn.Module) -> bool:
    """True if the model has a dropout layer of any kind (Dropout, Dropout1d/2d/3d, ...): its
    masks are drawn from the seeded (seed, "dropout", round, step[, node]) stream."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in model.modules())


def num_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())
