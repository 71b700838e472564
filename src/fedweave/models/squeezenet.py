"""SqueezeNet 1.1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fedweave.config import ModelConfig
from fedweave.models.base import CONV_OPTIONS, dropout, image_shape, norm2d, register_model, scaled


class Fire(nn.Module):
    """Squeeze ``1×1`` then concatenated ``1×1`` and ``3×3`` expands, each conv → norm → ReLU."""

    def __init__(self, cfg: ModelConfig, cin: int, squeeze: int, expand: int) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), norm2d(cfg, squeeze), nn.ReLU())
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1), norm2d(cfg, expand))
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, padding=1),
                                     norm2d(cfg, expand))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return F.relu(torch.cat([self.expand1(s), self.expand3(s)], dim=1))


@register_model("squeezenet", CONV_OPTIONS)
def squeezenet(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """SqueezeNet 1.1 (Iandola et al. 2016, "SqueezeNet: AlexNet-level accuracy with 50x fewer
    parameters and <0.5MB model size"; v1.1 from the authors' repository, as in torchvision):
    ``conv3×3/2 64`` and eight Fire modules with three ceil-mode max-pools, then
    ``Dropout(cfg.last_dropout)`` (0.5 in the paper) → ``conv1×1 classes`` → ReLU → global
    average pool. With norm batch/group a norm layer follows every conv but the classifier; the
    paper has none. Norm none, 1000 classes: 1,235,496 parameters. Needs inputs >= 17×17."""
    c, _, _ = image_shape("squeezenet", input_shape, min_side=17)
    w = cfg.width
    stem = scaled(64, w)
    layers: list[nn.Module] = [nn.Conv2d(c, stem, 3, 2), norm2d(cfg, stem), nn.ReLU()]
    cin = stem
    # (squeeze, expand) per Fire module; None is a 3×3 stride-2 ceil-mode max-pool.
    plan = (None, (16, 64), (16, 64), None, (32, 128), (32, 128), None,
            (48, 192), (48, 192), (64, 256), (64, 256))
    for fire in plan:
        if fire is None:
            layers += [nn.MaxPool2d(3, 2, ceil_mode=True), *dropout(cfg.dropout)]
        else:
            expand = scaled(fire[1], w)
            layers.append(Fire(cfg, cin, scaled(fire[0], w), expand))
            cin = 2 * expand
    return nn.Sequential(*layers, *dropout(cfg.last_dropout), nn.Conv2d(cin, num_classes, 1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
