"""RepDistiller-compatible CIFAR ResNets: keys, sizes, shapes, and architecture inference."""

from __future__ import annotations

import pytest
import torch

from fpkit.errors import ConfigError
from fpkit.models import (
    CIFAR_RESNETS,
    DEFAULT_LAYER,
    get_cifar_resnet,
    infer_cifar_resnet,
    resnet8x4,
    resnet20,
    resnet56,
)


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_repdistiller() -> None:
    assert _num_params(resnet56(num_classes=100)) == 861_620
    assert _num_params(resnet20(num_classes=100)) == 278_324


def test_resnet20_keys() -> None:
    keys = set(resnet20(num_classes=100).state_dict())
    for key in [
        "conv1.weight",
        "bn1.running_mean",
        "layer1.2.bn2.running_var",
        "layer1.0.conv1.weight",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.num_batches_tracked",
        "layer3.0.downsample.1.weight",
        "layer3.2.conv2.weight",
        "fc.weight",
        "fc.bias",
    ]:
        assert key in keys, key
    assert not any(k.startswith("layer1.0.downsample") for k in keys)
    assert not any(k.startswith("layer2.1.downsample") for k in keys)
    assert not any(k.startswith("layer4") for k in keys)
    assert "conv1.bias" not in keys
    # every key follows the RepDistiller pattern, nothing extra (no avgpool buffers)
    allowed_roots = {"conv1", "bn1", "layer1", "layer2", "layer3", "fc"}
    assert {k.split(".")[0] for k in keys} == allowed_roots
    assert len(keys) == 1 + 5 + 9 * 2 * (1 + 5) + 2 * (1 + 5) + 2


def test_resnet8x4_keys() -> None:
    sd = resnet8x4(num_classes=100).state_dict()
    # conv1 is 32 wide and layer1 is 64 wide, so layer1.0 has a downsample too
    assert tuple(sd["conv1.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["layer1.0.downsample.0.weight"].shape) == (64, 32, 1, 1)
    assert tuple(sd["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert tuple(sd["fc.weight"].shape) == (100, 256)
    assert "layer1.1.conv1.weight" not in sd


@pytest.mark.parametrize("name", list(CIFAR_RESNETS))
def test_infer_every_name(name: str) -> None:
    model = get_cifar_resnet(name, num_classes=7)
    assert infer_cifar_resnet(model.state_dict()) == name


def test_infer_rejects_other_nets() -> None:
    assert infer_cifar_resnet({}) is None
    assert infer_cifar_resnet(torch.nn.Linear(3, 2).state_dict()) is None
    sd = resnet20(num_classes=10).state_dict()
    del sd["layer3.2.conv1.weight"], sd["layer3.2.conv2.weight"]
    sd = {k: v for k, v in sd.items() if not k.startswith("layer3.2.")}
    assert infer_cifar_resnet(sd) is None  # uneven stages
    sd = resnet20(num_classes=10).state_dict()
    sd["layer4.0.conv1.weight"] = torch.zeros(1)
    assert infer_cifar_resnet(sd) is None


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "resnet8x4"])
def test_output_shapes(name: str) -> None:
    model = get_cifar_resnet(name, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_grayscale_28px_input() -> None:
    model = get_cifar_resnet("resnet8", num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert infer_cifar_resnet(model.state_dict()) == "resnet8"


def test_default_layer_feeds_classifier() -> None:
    assert DEFAULT_LAYER == "layer3"
    model = resnet20(num_classes=10).eval()
    feats = {}
    getattr(model, DEFAULT_LAYER).register_forward_hook(lambda m, i, o: feats.update(x=o))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
        pooled = feats["x"].mean(dim=(2, 3))
        assert pooled.shape == (2, 64)
        torch.testing.assert_close(model.fc(pooled), logits)


def test_unknown_name() -> None:
    with pytest.raises(ConfigError, match="resnet56"):
        get_cifar_resnet("resnet57", num_classes=10)
