"""The model zoo: a registry of builders ``(cfg, input_shape, num_classes) -> nn.Module``.

Built-in names: logistic, mlp, cnn, lenet, conv2, vgg11, resnet18, resnet32, resnet50,
squeezenet; for token sequences char_lstm and transformer (``models.sequence``). Options
(where they make sense): ``cfg.norm`` batch | group | none, ``cfg.width`` (every hidden width
is ``round(base × width)``, at least 1), ``cfg.dropout`` (inside), ``cfg.last_dropout``
(before the classifier), ``cfg.stem`` (ResNets). With norm group or none every model is pure
(no buffers changed in forward, no in-place ops), so it can be run with
``torch.func.functional_call`` under ``torch.func.vmap`` over stacked parameters.
Initialisation is PyTorch's default, drawn from the global torch RNG.
"""

from __future__ import annotations

from torch import nn

from fedweave.config import ModelConfig
from fedweave.models import resnet, sequence, small, squeezenet, vgg  # noqa: F401  (register built-ins)
from fedweave.models.base import MODELS, Builder, register_model

__all__ = ["MODELS", "Builder", "build_model", "has_dropout", "num_parameters",
           "register_model", "uses_batchnorm"]


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Build ``cfg.name`` for inputs of ``input_shape`` (no batch dim); unknown names raise
    ``UserError`` listing the choices. Seed the global torch RNG first for reproducibility."""
    return MODELS.get(cfg.name)(cfg, tuple(input_shape), num_classes)


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
