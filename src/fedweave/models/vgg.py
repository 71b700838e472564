"""VGG-11 for CIFAR-sized inputs."""

from __future__ import annotations

from torch import nn

from fedweave.config import ModelConfig
from fedweave.models.base import CONV_OPTIONS, dropout, image_shape, norm2d, register_model, scaled

# Configuration "A" of Simonyan & Zisserman; 0 marks a 2×2 max-pool.
VGG11 = (64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0)


@register_model("vgg11", CONV_OPTIONS)
def vgg11(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """VGG-11 (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks for Large-Scale
    Image Recognition", configuration A) in the CIFAR variant: ``conv3×3 (bias) → norm → ReLU``
    layers, five max-pools, global average pool and a single ``Linear(512 × width, classes)``
    classifier instead of the three 4096-wide FC layers. ``Dropout(cfg.dropout)`` follows each
    max-pool. Needs inputs of at least 32×32 (1×1 after the last pool on 32×32, where the
    average pool is the identity). 10 classes, norm batch, 32×32×3: 9,231,114 parameters."""
    c, _, _ = image_shape("vgg11", input_shape, min_side=32)
    layers: list[nn.Module] = []
    for v in VGG11:
        if v == 0:
            layers += [nn.MaxPool2d(2), *dropout(cfg.dropout)]
        else:
            out = scaled(v, cfg.width)
            layers += [nn.Conv2d(c, out, 3, padding=1), norm2d(cfg, out), nn.ReLU()]
            c = out
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         *dropout(cfg.last_dropout), nn.Linear(c, num_classes))
