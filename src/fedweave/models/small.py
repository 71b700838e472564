"""Small models: logistic regression, MLP and three conv-pool networks (cnn, lenet, conv2).

All are ``nn.Sequential``. Hidden layers are followed by ``Dropout(cfg.dropout)``, the classifier
is preceded by ``Dropout(cfg.last_dropout)`` (each only when > 0); conv layers keep their bias
and are followed by the ``cfg.norm`` layer.
"""

from __future__ import annotations

from torch import nn

from fedweave.config import ModelConfig
from fedweave.models.base import (
    CONV_OPTIONS,
    conv_out,
    dropout,
    flat_features,
    image_shape,
    norm2d,
    register_model,
    scaled,
)


def _head(cfg: ModelConfig, features: int, hidden: list[int], num_classes: int
          ) -> list[nn.Module]:
    """Flatten, hidden ``Linear → ReLU → Dropout`` layers, ``Dropout(last_dropout)``, classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(features, width), nn.ReLU(), *dropout(cfg.dropout)]
        features = width
    return [*layers, *dropout(cfg.last_dropout), nn.Linear(features, num_classes)]


def _conv_block(cfg: ModelConfig, cin: int, cout: int, kernel: int,
                padding: int | tuple[int, int]) -> list[nn.Module]:
    """``Conv → norm → ReLU → MaxPool(2) → Dropout(cfg.dropout)``."""
    return [nn.Conv2d(cin, cout, kernel, padding=padding), norm2d(cfg, cout), nn.ReLU(),
            nn.MaxPool2d(2), *dropout(cfg.dropout)]


@register_model("logistic", ("last_dropout",))
def logistic(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multinomial logistic regression: flatten + one linear layer."""
    return nn.Sequential(*_head(cfg, flat_features(input_shape), [], num_classes))


@register_model("mlp", ("hidden", "width", "dropout", "last_dropout"))
def mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Multi-layer perceptron with ReLU hidden layers of widths ``cfg.hidden`` × ``cfg.width``
    (the 2NN of McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
    Decentralized Data", is ``hidden: [200, 200]``, the default)."""
    hidden = [scaled(h, cfg.width) for h in cfg.hidden]
    return nn.Sequential(*_head(cfg, flat_features(input_shape), hidden, num_classes))


@register_model("cnn", CONV_OPTIONS)
def cnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Small CNN in the style of McMahan et al. 2017's MNIST CNN, sized from the input:
    two ``conv3×3 (32, 64 × width) → norm → ReLU → max-pool 2`` blocks, an adaptive average pool
    to at most 3×3, a hidden FC 128 × width and the classifier. Works from 4×4 up (8×8 digits,
    28×28, 32×32, 64×64). On 28×28×1 with 10 classes: 94,154 parameters (norm batch or group),
    93,962 (norm none)."""
    c, h, w = image_shape("cnn", input_shape, min_side=4)
    c1, c2 = scaled(32, cfg.width), scaled(64, cfg.width)
    grid = (min(3, h // 4), min(3, w // 4))
    return nn.Sequential(
        *_conv_block(cfg, c, c1, 3, 1),
        *_conv_block(cfg, c1, c2, 3, 1),
        nn.AdaptiveAvgPool2d(grid),
        *_head(cfg, c2 * grid[0] * grid[1], [scaled(128, cfg.width)], num_classes),
    )


@register_model("lenet", CONV_OPTIONS)
def lenet(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998, "Gradient-Based Learning Applied to Document Recognition")
    in its modern style: ReLU and max-pool instead of tanh and subsampling, a full C3 table.
    ``conv5×5 6 → pool → conv5×5 16 → pool → FC 120 → FC 84 → classes``; inputs smaller than
    32×32 are zero-padded to 32×32 by the first conv, as the paper padded 28×28 MNIST digits.
    10 classes: 61,706 parameters on 28×28×1 or 32×32×1, 62,006 on 32×32×3 (norm none)."""
    c, h, w = image_shape("lenet", input_shape)
    pad = (max(0, (32 - h) // 2), max(0, (32 - w) // 2))
    c1, c2 = scaled(6, cfg.width), scaled(16, cfg.width)
    h2, w2 = (conv_out(conv_out(s, 5, 1, p) // 2, 5) // 2 for s, p in ((h, pad[0]), (w, pad[1])))
    return nn.Sequential(
        *_conv_block(cfg, c, c1, 5, pad),
        *_conv_block(cfg, c1, c2, 5, 0),
        *_head(cfg, c2 * h2 * w2, [scaled(120, cfg.width), scaled(84, cfg.width)], num_classes),
    )


@register_model("conv2", CONV_OPTIONS)
def conv2(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The FEMNIST CNN of LEAF (Caldas et al. 2018, "LEAF: A Benchmark for Federated
    Settings"): ``conv5×5 32 → pool → conv5×5 64 → pool → FC 2048 → classes`` ('same' padding).
    On 28×28×1 with 62 classes: 6,603,710 parameters (norm none, as in LEAF)."""
    c, h, w = image_shape("conv2", input_shape, min_side=4)
    c1, c2 = scaled(32, cfg.width), scaled(64, cfg.width)
    return nn.Sequential(
        *_conv_block(cfg, c, c1, 5, 2),
        *_conv_block(cfg, c1, c2, 5, 2),
        *_head(cfg, c2 * (h // 4) * (w // 4), [scaled(2048, cfg.width)], num_classes),
    )
