"""Model zoo: shapes, published parameter counts, options, vmap-safety, registry."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, stack_module_state, vmap

from fedweave.config import ModelConfig
from fedweave.config.model import MIN_WIDTH
from fedweave.errors import UserError
from fedweave.models import (
    MODELS,
    build_model,
    num_parameters,
    register_model,
    uses_batchnorm,
)
from fedweave.models.base import group_count

BUILTIN = ["cnn", "conv2", "lenet", "logistic", "mlp", "resnet18", "resnet32", "resnet50",
           "squeezenet", "vgg11"]
CONV = ["cnn", "conv2", "lenet", "resnet18", "resnet32", "resnet50", "squeezenet", "vgg11"]

# A small but valid input per model (big models at width 1/8 to keep the tests fast).
SMALL: dict[str, tuple[tuple[int, ...], dict[str, Any]]] = {
    "logistic": ((1, 8, 8), {}),
    "mlp": ((1, 8, 8), {"hidden": [16, 8]}),
    "cnn": ((1, 8, 8), {"width": 0.25}),
    "lenet": ((1, 8, 8), {}),
    "conv2": ((1, 8, 8), {"width": 0.125}),
    "vgg11": ((3, 32, 32), {"width": 0.125}),
    "resnet18": ((3, 8, 8), {"width": 0.125}),
    "resnet32": ((3, 8, 8), {"width": 0.5}),
    "resnet50": ((3, 8, 8), {"width": 0.125, "stem": "imagenet"}),
    "squeezenet": ((3, 17, 17), {"width": 0.125}),
}


def make(name: str, shape: tuple[int, ...], classes: int = 10, **kw: Any) -> nn.Module:
    return build_model(ModelConfig(name=name, **kw), shape, classes)


def test_builtin_names() -> None:
    assert set(BUILTIN) <= set(MODELS.names())


@pytest.mark.parametrize(("name", "shape", "kw"), [
    ("logistic", (60,), {}),
    ("logistic", (1, 28, 28), {}),
    ("mlp", (60,), {}),
    ("mlp", (3, 32, 32), {"hidden": [32]}),
    ("cnn", (1, 8, 8), {}),
    ("cnn", (1, 28, 28), {}),
    ("cnn", (3, 32, 32), {}),
    ("cnn", (3, 64, 64), {}),
    ("cnn", (3, 4, 6), {}),
    ("lenet", (1, 8, 8), {}),
    ("lenet", (1, 28, 28), {}),
    ("lenet", (3, 32, 32), {}),
    ("lenet", (3, 64, 48), {}),
    ("conv2", (1, 8, 8), {}),
    ("conv2", (1, 28, 28), {}),
    ("conv2", (3, 32, 32), {"width": 0.25}),
    ("vgg11", (3, 32, 32), {"width": 0.25}),
    ("vgg11", (3, 64, 64), {"width": 0.125}),
    ("resnet18", (3, 32, 32), {"width": 0.25}),
    ("resnet18", (3, 64, 64), {"width": 0.125, "stem": "imagenet"}),
    ("resnet32", (3, 32, 32), {}),
    ("resnet32", (1, 28, 28), {"width": 0.5}),
    ("resnet50", (3, 32, 32), {"width": 0.125}),
    ("resnet50", (3, 64, 64), {"width": 0.125, "stem": "imagenet"}),
    ("squeezenet", (3, 17, 17), {}),
    ("squeezenet", (3, 32, 32), {"width": 0.5}),
])
@pytest.mark.parametrize("norm", ["batch", "group", "none"])
def test_forward_shape(name: str, shape: tuple[int, ...], kw: dict[str, Any], norm: str) -> None:
    model = make(name, shape, 7, norm=norm, **kw)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(("name", "shape", "classes", "kw", "expected"), [
    ("resnet18", (3, 32, 32), 10, {}, 11_173_962),
    ("resnet18", (3, 224, 224), 1000, {"stem": "imagenet"}, 11_689_512),
    ("resnet32", (3, 32, 32), 10, {}, 464_154),
    ("resnet50", (3, 224, 224), 1000, {"stem": "imagenet"}, 25_557_032),
    ("vgg11", (3, 32, 32), 10, {}, 9_231_114),
    ("squeezenet", (3, 224, 224), 1000, {"norm": "none"}, 1_235_496),
    ("conv2", (1, 28, 28), 62, {"norm": "none"}, 6_603_710),
    ("lenet", (1, 28, 28), 10, {"norm": "none"}, 61_706),
    ("lenet", (3, 32, 32), 10, {"norm": "none"}, 62_006),
    ("cnn", (1, 28, 28), 10, {}, 94_154),
    ("cnn", (1, 28, 28), 10, {"norm": "none"}, 93_962),
    ("mlp", (1, 28, 28), 10, {}, 199_210),  # the 2NN of McMahan et al. 2017
    ("logistic", (60,), 10, {}, 610),
])
def test_parameter_counts(name: str, shape: tuple[int, ...], classes: int, kw: dict[str, Any],
                          expected: int) -> None:
    kw = {"norm": "batch", **kw}
    assert num_parameters(make(name, shape, classes, **kw)) == expected


def _norm_types(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d | nn.GroupNorm)}


@pytest.mark.parametrize("name", CONV)
def test_norm_options(name: str) -> None:
    shape, kw = SMALL[name]
    assert _norm_types(make(name, shape, norm="batch", **kw)) == {nn.BatchNorm2d}
    assert _norm_types(make(name, shape, norm="group", **kw)) == {nn.GroupNorm}
    assert _norm_types(make(name, shape, norm="none", **kw)) == set()
    assert uses_batchnorm(make(name, shape, norm="batch", **kw))
    assert not uses_batchnorm(make(name, shape, norm="group", **kw))
    assert not uses_batchnorm(make(name, shape, norm="none", **kw))


def test_group_norm_groups() -> None:
    model = make("resnet18", (3, 8, 8), norm="group", group_channels=32)
    groups = {(m.num_channels, m.num_groups) for m in model.modules()
              if isinstance(m, nn.GroupNorm)}
    assert groups == {(64, 2), (128, 4), (256, 8), (512, 16)}
    assert group_count(16, 32) == 1
    assert group_count(100, 32) == 2  # 100 // 32 = 3 does not divide 100
    make("cnn", (1, 8, 8), norm="group", group_channels=32, width=100 / 64)  # 100 channels


def _widths(model: nn.Module) -> list[int]:
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
            for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@pytest.mark.parametrize("name", BUILTIN)
def test_width_scales_hidden_channels(name: str) -> None:
    shape, kw = SMALL[name]
    base = {**kw, "width": 1.0}
    full = _widths(make(name, shape, **base))
    for width in (0.5, 0.3, MIN_WIDTH):  # the smallest width clamps narrow layers to 1
        scaled = _widths(make(name, shape, **{**base, "width": width}))
        assert scaled[-1] == full[-1] == 10  # the classifier keeps num_classes outputs
        assert scaled[:-1] == [max(1, round(c * width)) for c in full[:-1]]
    tiny = make(name, shape, **{**base, "width": MIN_WIDTH})
    assert tiny(torch.randn(2, *shape)).shape == (2, 10)


def test_mlp_hidden_and_dropout() -> None:
    model = make("mlp", (5,), 3, hidden=[40, 20], width=0.5, dropout=0.2, last_dropout=0.3)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [20, 10, 3]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2, 0.2, 0.3]
    assert not any(isinstance(m, nn.Dropout) for m in make("mlp", (5,), 3).modules())


@pytest.mark.parametrize("name", BUILTIN)
def test_dropout_options(name: str) -> None:
    shape, kw = SMALL[name]
    model = make(name, shape, dropout=0.1, last_dropout=0.4, **kw)
    ps = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert ps.count(0.4) == 1
    assert name == "logistic" or 0.1 in ps


def test_resnet_stems() -> None:
    cifar = make("resnet18", (3, 32, 32), norm="none")
    imagenet = make("resnet18", (3, 32, 32), norm="none", stem="imagenet")
    stem_c, stem_i = cifar.stem[0], imagenet.stem[0]
    assert (stem_c.kernel_size, stem_c.stride) == ((3, 3), (1, 1))
    assert (stem_i.kernel_size, stem_i.stride) == ((7, 7), (2, 2))
    assert not any(isinstance(m, nn.MaxPool2d) for m in cifar.modules())
    assert isinstance(imagenet.stem[-1], nn.MaxPool2d)


def test_deterministic_given_seed() -> None:
    def params(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return list(make("resnet32", (3, 8, 8), width=0.5).parameters())

    a, b, c = params(1), params(1), params(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize("name", BUILTIN)
def test_vmap_matches_loop(name: str) -> None:
    """Stacked parameters of 3 independent copies under vmap(functional_call) and
    vmap(grad(loss)) equal the per-copy loop (in float64, so float32 summation-order noise
    of batched convolutions cannot hide or fake a difference)."""
    torch.manual_seed(0)
    shape, kw = SMALL[name]
    models = [make(name, shape, norm="group", group_channels=4, **kw).double()
              for _ in range(3)]
    base = models[0]
    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    x = torch.randn(3, 4, *shape, dtype=torch.float64)
    y = torch.randint(0, 10, (3, 4))

    def forward(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor],
                xb: torch.Tensor) -> torch.Tensor:
        return functional_call(base, (p, b), (xb,))

    def loss(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], xb: torch.Tensor,
             yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(forward(p, b, xb), yb)

    out = vmap(forward)(params, buffers, x)
    grads = vmap(grad(loss))(params, buffers, x, y)
    for i, model in enumerate(models):
        torch.testing.assert_close(out[i], model(x[i]), rtol=1e-5, atol=1e-5)
        model.zero_grad()
        F.cross_entropy(model(x[i]), y[i]).backward()
        for key, p in model.named_parameters():
            torch.testing.assert_close(grads[key][i], p.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "cnn", "resnet32"])
def test_vmap_with_dropout(name: str) -> None:
    shape, kw = SMALL[name]
    models = [make(name, shape, norm="none", dropout=0.3, last_dropout=0.5, **kw)
              for _ in range(3)]
    params, buffers = stack_module_state(models)  # type: ignore[arg-type]
    out = vmap(lambda p, b, x: functional_call(models[0], (p, b), (x,)),
               randomness="different")(params, buffers, torch.randn(3, 4, *shape))
    assert out.shape == (3, 4, 10)


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(UserError, match=r"unknown model 'nope'.*resnet18.*vgg11"):
        make("nope", (3, 32, 32))


@pytest.mark.parametrize(("name", "shape"), [
    ("cnn", (60,)), ("resnet18", (3, 32)), ("vgg11", (3, 28, 28)), ("squeezenet", (3, 16, 16)),
])
def test_bad_input_shape(name: str, shape: tuple[int, ...]) -> None:
    with pytest.raises(UserError, match=name):
        make(name, shape)


def test_register_user_model() -> None:
    @register_model("test-tiny")
    def tiny(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0], num_classes))

    try:
        model = make("test-tiny", (6,), 4)
        assert model(torch.randn(2, 6)).shape == (2, 4)
        assert num_parameters(model) == 28
        assert "test-tiny" in MODELS
    finally:
        MODELS._items.pop("test-tiny")
