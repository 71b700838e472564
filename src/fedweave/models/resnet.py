"""Residual networks (He et al. 2016, "Deep Residual Learning for Image Recognition"): one
builder for basic and bottleneck blocks, CIFAR or ImageNet stem (``cfg.stem``).

Convolutions have no bias (a norm layer follows). ``Dropout(cfg.dropout)`` follows every
residual block and ``Dropout(cfg.last_dropout)`` precedes the classifier.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fedweave.config import ModelConfig
from fedweave.models.base import CONV_OPTIONS, dropout, image_shape, norm2d, register_model, scaled

Shortcut = Literal["identity", "pad", "projection"]


class PadShortcut(nn.Module):
    """Option A of He et al.: subsample by ``stride`` and zero-pad the new channels
    (parameter-free, used by the CIFAR ResNets of §4.2)."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


def _shortcut(cfg: ModelConfig, cin: int, cout: int, stride: int, kind: Shortcut) -> nn.Module:
    if kind == "identity":
        return nn.Identity()
    if kind == "pad":
        return PadShortcut(stride, cout - cin)
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), norm2d(cfg, cout))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions (ResNet-18/34 and the CIFAR ResNets)."""

    expansion = 1

    def __init__(self, cfg: ModelConfig, cin: int, planes: int, out: int, stride: int,
                 shortcut: Shortcut) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = norm2d(cfg, planes)
        self.conv2 = nn.Conv2d(planes, out, 3, 1, 1, bias=False)
        self.bn2 = norm2d(cfg, out)
        self.shortcut = _shortcut(cfg, cin, out, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carrying the stride, as in torchvision's "ResNet v1.5"), 1×1 expand ×4."""

    expansion = 4

    def __init__(self, cfg: ModelConfig, cin: int, planes: int, out: int, stride: int,
                 shortcut: Shortcut) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = norm2d(cfg, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = norm2d(cfg, planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = norm2d(cfg, out)
        self.shortcut = _shortcut(cfg, cin, out, stride, shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


def _stem(cfg: ModelConfig, cin: int, cout: int) -> nn.Sequential:
    """CIFAR: ``conv3×3 stride 1``; ImageNet: ``conv7×7 stride 2 + max-pool 3×3 stride 2``."""
    if cfg.stem == "cifar":
        return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), norm2d(cfg, cout),
                             nn.ReLU())
    return nn.Sequential(nn.Conv2d(cin, cout, 7, 2, 3, bias=False), norm2d(cfg, cout), nn.ReLU(),
                         nn.MaxPool2d(3, 2, 1))


def resnet(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
           block: type[BasicBlock | Bottleneck], depths: tuple[int, ...],
           widths: tuple[int, ...], shortcut: Shortcut) -> nn.Sequential:
    """A ResNet: stem, stages of ``depths[i]`` blocks with ``widths[i] × cfg.width`` planes and
    ``widths[i] × expansion × cfg.width`` outputs (stride 2 from the second stage on), global
    average pool, classifier."""
    c, _, _ = image_shape(cfg.name, input_shape)
    base_in = widths[0]
    cin = scaled(base_in, cfg.width)
    parts: OrderedDict[str, nn.Module] = OrderedDict(stem=_stem(cfg, c, cin))
    for i, (depth, base) in enumerate(zip(depths, widths, strict=True)):
        planes, out = scaled(base, cfg.width), scaled(base * block.expansion, cfg.width)
        blocks: list[nn.Module] = []
        for j in range(depth):
            stride = 2 if i > 0 and j == 0 else 1
            # decided on the unscaled widths, so every width has the same layers (HeteroFL)
            kind = shortcut if stride > 1 or base_in != base * block.expansion else "identity"
            blocks += [block(cfg, cin, planes, out, stride, kind), *dropout(cfg.dropout)]
            cin, base_in = out, base * block.expansion
        parts[f"layer{i + 1}"] = nn.Sequential(*blocks)
    parts["pool"] = nn.AdaptiveAvgPool2d(1)
    parts["flatten"] = nn.Flatten()
    parts["head"] = nn.Sequential(*dropout(cfg.last_dropout), nn.Linear(cin, num_classes))
    return nn.Sequential(parts)


@register_model("resnet18", (*CONV_OPTIONS, "stem"))
def resnet18(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """ResNet-18: basic blocks [2, 2, 2, 2], widths 64–512, 1×1 projection shortcuts (option B).
    Norm batch, 10 classes, CIFAR stem: 11,173,962 parameters (1000 classes, ImageNet stem:
    11,689,512, as torchvision)."""
    return resnet(cfg, input_shape, num_classes, BasicBlock, (2, 2, 2, 2),
                  (64, 128, 256, 512), "projection")


@register_model("resnet32", (*CONV_OPTIONS, "stem"))
def resnet32(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """ResNet-32 for CIFAR (§4.2 of the paper, 6n+2 layers with n = 5): three stages of basic
    blocks with 16/32/64 channels and the parameter-free option-A shortcut. Norm batch,
    10 classes, CIFAR stem: 464,154 parameters (the paper's 0.46M)."""
    return resnet(cfg, input_shape, num_classes, BasicBlock, (5, 5, 5), (16, 32, 64), "pad")


@register_model("resnet50", (*CONV_OPTIONS, "stem"))
def resnet50(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """ResNet-50: bottleneck blocks [3, 4, 6, 3], widths 64–512 (×4 out), projection shortcuts.
    Norm batch, 1000 classes, ImageNet stem: 25,557,032 parameters (as torchvision)."""
    return resnet(cfg, input_shape, num_classes, Bottleneck, (3, 4, 6, 3),
                  (64, 128, 256, 512), "projection")
