"""What a model's input goes through before its first layer, so that a model taken out of
fedweave (``fedweave export``, ``fedweave.load_model``) can be fed raw images.

Images are stored as uint8 ``[N, C, H, W]``; the model sees ``(x/255 − mean_c) / std_c`` per
channel (``data.normalize``; just ``x/255`` without it); features that are already float are
used as they are. The description is plain JSON (``model.json``, the safetensors metadata
key ``preprocessing``)::

    {"input_dtype": "uint8", "scale": 0.00392156862745098, "mean": [0.1307], "std": [0.3081],
     "input_shape": [1, 28, 28], "layout": "NCHW", "classes": ["T-shirt/top", ...] | null}

Outside fedweave: ``x = (raw.float() * scale − mean) / std`` per channel (mean/std null: no
shift), in NCHW order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from fedweave.data.federated import FederatedData


@dataclass(frozen=True)
class Preprocessing:
    """The input transform of a trained model; calling it maps raw inputs to model inputs."""

    input_dtype: str                    # "uint8" (images, scaled) or "float32" (as is)
    input_shape: tuple[int, ...]        # one sample: (C, H, W) or (features,)
    scale: float | None = None          # 1/255 for uint8 images
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    layout: str = "NCHW"
    classes: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("input_shape", "mean", "std", "classes"):
            data[key] = list(data[key]) if data[key] is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Preprocessing:
        def tup(key: str) -> Any:
            value = data.get(key)
            return tuple(value) if value is not None else None

        return cls(str(data["input_dtype"]), tuple(int(s) for s in data["input_shape"]),
                   data.get("scale"), tup("mean"), tup("std"), str(data.get("layout", "NCHW")),
                   tup("classes"))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Raw inputs → model inputs: a batch ``[N, *input_shape]`` or one sample
        ``input_shape``; uint8 images may also come channels-last ``[N, H, W, C]``."""
        x = torch.as_tensor(x)
        shape = self.input_shape
        if tuple(x.shape) == shape:
            x = x.unsqueeze(0)
        if len(shape) == 3 and tuple(x.shape[1:]) != shape \
                and tuple(x.shape[1:]) == (shape[1], shape[2], shape[0]):
            x = x.permute(0, 3, 1, 2)     # NHWC (PIL, numpy images) → NCHW
        if tuple(x.shape[1:]) != shape:
            raise ValueError(f"inputs of shape {tuple(x.shape)}; the model takes "
                             f"[N, {', '.join(map(str, shape))}]")
        out = x.float()
        if self.scale is not None:  # x / 255 exactly as in training (not x · 0.0039...)
            div = 1 / self.scale
            out = out / (round(div) if abs(div - round(div)) < 1e-6 else div)
        if self.mean is not None and self.std is not None:
            view = (-1, *([1] * (len(shape) - 1)))
            out = (out - torch.tensor(self.mean).view(view)) / torch.tensor(self.std).view(view)
        return out


def preprocessing(data: FederatedData) -> dict[str, Any]:
    """The JSON description of ``data``'s input transform (``FederatedData.features``)."""
    images = data.x.dtype == torch.uint8
    pre = Preprocessing(
        "uint8" if images else "float32", tuple(int(s) for s in data.input_shape),
        1 / 255 if images else None,
        tuple(data.mean) if images and data.mean is not None else None,
        tuple(data.std) if images and data.std is not None else None,
        "NCHW" if len(data.input_shape) == 3 else "NF",
        tuple(data.classes) if data.classes else None)
    return pre.to_json()

