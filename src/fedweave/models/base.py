"""The model registry and the layer helpers every architecture shares (norm, width, dropout).

A builder has the signature ``(cfg, input_shape, num_classes) -> nn.Module`` where
``input_shape`` excludes the batch dimension: ``(C, H, W)`` for images, ``(D,)`` for features.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import nn

from fedweave.config import ModelConfig
from fedweave.errors import UserError
from fedweave.registry import Registry

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]

#: built-in model name -> the module that registers it (imported on first use)
BUILTIN_MODELS = {
    **dict.fromkeys(("logistic", "mlp", "cnn", "lenet", "conv2"), "fedweave.models.small"),
    **dict.fromkeys(("resnet18", "resnet32", "resnet50"), "fedweave.models.resnet"),
    "vgg11": "fedweave.models.vgg", "squeezenet": "fedweave.models.squeezenet",
    **dict.fromkeys(("char_lstm", "transformer"), "fedweave.models.sequence"),
}
MODELS: Registry[Builder] = Registry("model", BUILTIN_MODELS)
#: the ``model.*`` options each built-in model reads (``model.name`` aside); a run that sets
#: another one gets a "has no effect" warning. Plugin models declare theirs, or get none.
MODEL_OPTIONS: dict[str, frozenset[str]] = {}
CONV_OPTIONS = ("norm", "width", "group_channels", "dropout", "last_dropout")


def register_model(name: str, options: tuple[str, ...] | None = None, override: bool = False
                   ) -> Callable[[Builder], Builder]:
    """Decorator: make ``model.name: <name>`` build with this function; ``options``: the
    ``model.*`` keys it reads; ``override``: replace a model another module registered (a
    built-in), which is refused otherwise."""
    add = MODELS.register(name, override)

    def register(builder: Builder) -> Builder:
        add(builder)
        if options is not None:
            MODEL_OPTIONS[name] = frozenset(options)
        return builder

    return register


def scaled(base: int, width: float) -> int:
    """A hidden width under the channel multiplier: ``round(base × width)``, at least 1."""
    return max(1, round(base * width))


def group_count(channels: int, group_channels: int) -> int:
    """``max(1, channels // group_channels)`` groups, lowered to the nearest divisor of
    ``channels`` when it does not divide them (possible after width scaling, e.g. 100 // 32)."""
    groups = max(1, channels // group_channels)
    while channels % groups:
        groups -= 1
    return groups


def norm2d(cfg: ModelConfig, channels: int) -> nn.Module:
    """The normalisation layer for ``cfg.norm``: BatchNorm2d, GroupNorm or Identity."""
    if cfg.norm == "batch":
        return nn.BatchNorm2d(channels)
    if cfg.norm == "group":
        return nn.GroupNorm(group_count(channels, cfg.group_channels), channels)
    return nn.Identity()


def dropout(p: float) -> list[nn.Module]:
    """``[nn.Dropout(p)]``, or nothing when ``p`` is 0 (so unused options add no modules)."""
    return [nn.Dropout(p)] if p > 0 else []


def image_shape(name: str, input_shape: tuple[int, ...], min_side: int = 1
                ) -> tuple[int, int, int]:
    """``input_shape`` as ``(C, H, W)``, or a ``UserError`` saying what ``name`` needs."""
    if len(input_shape) != 3 or min(input_shape[1:]) < min_side:
        raise UserError(
            f"model {name!r} needs image inputs (C, H, W) with H, W >= {min_side}; "
            f"got input shape {tuple(input_shape)}"
        )
    c, h, w = input_shape
    return c, h, w


def flat_features(input_shape: tuple[int, ...]) -> int:
    """Number of inputs after flattening one example."""
    return math.prod(input_shape)


def conv_out(side: int, kernel: int, stride: int = 1, padding: int = 0) -> int:
    """Output side of a convolution or pooling layer (the formula of ``nn.Conv2d``)."""
    return (side + 2 * padding - kernel) // stride + 1
