"""The ``model`` and ``train`` sections: the network every node trains and how it trains
locally."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from fedweave.config.base import Section

#: the smallest ``model.width``: below, every layer of the built-in models is one unit wide
MIN_WIDTH = 1 / 64


def check_milestones(value: list[int], unit: str) -> list[int]:
    """MultiStepLR milestones are positive (a milestone ≤ 0 never fires)."""
    bad = [m for m in value if m < 1]
    if bad:
        raise ValueError(f"{bad[0]} is not a milestone: the {unit} after which lr is "
                         "multiplied by gamma count from 1")
    return value


class ModelConfig(Section):
    """The model every node trains (``fedweave.models``)."""

    name: str = Field("cnn", description="a registered model: logistic, mlp, cnn, lenet, "
                      "conv2, vgg11, resnet18, resnet32, resnet50, squeezenet, or a plugin's")
    norm: Literal["batch", "group", "none"] = Field(
        "group", description="normalization layers (batch norm forces the loop engine)")
    width: float = Field(1.0, gt=0, description="channel-width multiplier")
    group_channels: int = Field(32, ge=1, description="channels per GroupNorm group")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability inside the "
                           "network")
    last_dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability before the "
                                "classifier")
    hidden: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [200, 200],
        description="mlp hidden layer widths (units, each at least 1)")
    stem: Literal["cifar", "imagenet"] = Field(
        "cifar", description="ResNet input stem: 3×3 conv (cifar) or 7×7 conv + max-pool "
        "(imagenet)")

    @field_validator("width")
    @classmethod
    def _some_width(cls, value: float) -> float:
        if value < MIN_WIDTH:
            raise ValueError(f"{value:g} makes every layer 1 unit wide (widths are round(base "
                             f"× width), at least 1, and the bases are 6 to 64): use at least "
                             f"{MIN_WIDTH} (1/64)")
        return value


class TrainConfig(Section):
    """Local training of every node (clients or peers)."""

    optimizer: Literal["sgd", "adam"] = Field("sgd", description="local optimizer")
    lr: float = Field(0.05, gt=0, description="local learning rate")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum (buffers start at "
                            "zero)")
    nesterov: bool = Field(False, description="Nesterov momentum (needs momentum > 0)")
    weight_decay: float = Field(0.0, ge=0, description="wd·w added to the gradient (not to "
                                "the reported loss)")
    l2_lambda: float = Field(0.0, ge=0, description="adds ½λ‖w‖² to the loss (reference system "
                             "001)")
    batch_size: int = Field(32, ge=1, description="local mini-batch size",
                            json_schema_extra={"unit": "samples"})
    local_epochs: float = Field(1.0, gt=0, description="passes over the node's shard per round",
                                json_schema_extra={"unit": "epochs"})
    local_steps: int | None = Field(None, ge=1, description="overrides local_epochs",
                                    json_schema_extra={"unit": "steps"})
    epoch_samples: int | None = Field(
        None, ge=1, description="samples in one epoch of a node, whatever its shard size "
        "(reference system 001's train_data_length: 10,000); each shard sample is drawn "
        "⌊m/n⌋ or ⌈m/n⌉ times, in random order; default: the shard size")
    scheduler: Literal["none", "step", "multistep"] = Field(
        "none", description="learning-rate schedule over rounds: none, step (StepLR) or "
        "multistep (MultiStepLR at milestones)")
    step_size: int = Field(1, ge=1, description="StepLR period",
                           json_schema_extra={"unit": "rounds"})
    gamma: float = Field(0.9, gt=0, description="StepLR factor: lr·gamma^⌊round/step_size⌋")
    milestones: list[int] = Field(default_factory=list, description="scheduler: multistep "
                                  "(MultiStepLR): rounds after which lr is multiplied by gamma")

    @field_validator("milestones")
    @classmethod
    def _milestones(cls, value: list[int]) -> list[int]:
        return check_milestones(value, "rounds")
