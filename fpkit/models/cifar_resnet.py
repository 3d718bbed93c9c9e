"""CIFAR ResNets with RepDistiller-compatible ``state_dict`` keys.

Depth ``6n + 2`` networks made of BasicBlocks in three stages (strides 1, 2, 2):

* ``resnet8/14/20/32/44/56/110``: widths (16, 16, 32, 64);
* ``resnet8x4/resnet32x4``: widths (32, 64, 128, 256).

Keys are exactly those of RepDistiller's checkpoints: ``conv1``, ``bn1``,
``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``, ``layer{k}.{i}.downsample.{0,1}`` (only where the
stride or the width changes) and ``fc``, so its teachers load with ``strict=True``.
``forward`` returns logits only.  Global pooling is adaptive, so 28x28 inputs (Fashion-MNIST)
work as well as 32x32 ones; it has no parameters or buffers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from fpkit.errors import ConfigError

DEFAULT_LAYER = "layer3"
"""The tap layer for these nets: its pooled output is the penultimate feature that feeds fc."""

_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

# name -> (blocks per stage n, widths)
_SPECS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "resnet8": (1, _NARROW),
    "resnet14": (2, _NARROW),
    "resnet20": (3, _NARROW),
    "resnet32": (5, _NARROW),
    "resnet44": (7, _NARROW),
    "resnet56": (9, _NARROW),
    "resnet110": (18, _NARROW),
    "resnet8x4": (1, _WIDE),
    "resnet32x4": (5, _WIDE),
}


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity (or 1x1 conv + BN) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class CifarResNet(nn.Module):
    """A RepDistiller-style CIFAR ResNet: conv1/bn1/relu, layer1..3, global avg pool, fc."""

    def __init__(
        self,
        blocks_per_stage: int,
        widths: tuple[int, int, int, int],
        num_classes: int = 100,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if blocks_per_stage < 1:
            raise ConfigError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        if num_classes < 1 or in_channels < 1:
            raise ConfigError(f"num_classes and in_channels must be >= 1, got {num_classes} and {in_channels}")
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(widths[0], widths[1], blocks_per_stage, stride=1)
        self.layer2 = self._make_layer(widths[1], widths[2], blocks_per_stage, stride=2)
        self.layer3 = self._make_layer(widths[2], widths[3], blocks_per_stage, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @staticmethod
    def _make_layer(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes, 1) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images ``[N, in_channels, H, W]`` to logits ``[N, num_classes]``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _build(name: str, num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    n, widths = _SPECS[name]
    return CifarResNet(n, widths, num_classes=num_classes, in_channels=in_channels)


def resnet8(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-8 (n=1, widths 16/16/32/64)."""
    return _build("resnet8", num_classes, in_channels)


def resnet14(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-14 (n=2, widths 16/16/32/64)."""
    return _build("resnet14", num_classes, in_channels)


def resnet20(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 (n=3, widths 16/16/32/64); 278,324 parameters with 100 classes."""
    return _build("resnet20", num_classes, in_channels)


def resnet32(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-32 (n=5, widths 16/16/32/64)."""
    return _build("resnet32", num_classes, in_channels)


def resnet44(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-44 (n=7, widths 16/16/32/64)."""
    return _build("resnet44", num_classes, in_channels)


def resnet56(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-56 (n=9, widths 16/16/32/64); 861,620 parameters with 100 classes."""
    return _build("resnet56", num_classes, in_channels)


def resnet110(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-110 (n=18, widths 16/16/32/64)."""
    return _build("resnet110", num_classes, in_channels)


def resnet8x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-8x4 (n=1, widths 32/64/128/256)."""
    return _build("resnet8x4", num_classes, in_channels)


def resnet32x4(num_classes: int = 100, in_channels: int = 3) -> CifarResNet:
    """ResNet-32x4 (n=5, widths 32/64/128/256)."""
    return _build("resnet32x4", num_classes, in_channels)


CIFAR_RESNETS: dict[str, Callable[..., CifarResNet]] = {
    "resnet8": resnet8,
    "resnet14": resnet14,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "resnet8x4": resnet8x4,
    "resnet32x4": resnet32x4,
}


def get_cifar_resnet(name: str, num_classes: int, in_channels: int = 3) -> CifarResNet:
    """Build the CIFAR ResNet called ``name`` (a key of :data:`CIFAR_RESNETS`).

    Raises:
        ConfigError: ``name`` is not one of the known CIFAR ResNets.
    """
    try:
        factory = CIFAR_RESNETS[name]
    except KeyError:
        known = ", ".join(CIFAR_RESNETS)
        raise ConfigError(f"unknown CIFAR ResNet {name!r}; use one of: {known}") from None
    return factory(num_classes=num_classes, in_channels=in_channels)


def _shape(state_dict: Mapping[str, object], key: str) -> tuple[int, ...] | None:
    value = state_dict.get(key)
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(int(s) for s in shape)


def _blocks_in(state_dict: Mapping[str, object], layer: str) -> int:
    prefix = layer + "."
    indices = {
        int(k[len(prefix) :].split(".", 1)[0])
        for k in state_dict
        if k.startswith(prefix) and k[len(prefix) :].split(".", 1)[0].isdigit()
    }
    if not indices or indices != set(range(len(indices))):
        return 0
    return len(indices)


def infer_cifar_resnet(state_dict: Mapping[str, object]) -> str | None:
    """Name the CIFAR ResNet whose ``state_dict`` this is, from its keys and shapes.

    Looks at the width of ``conv1`` and the number of blocks in each stage; the full key set is
    not checked here (a strict ``load_state_dict`` does that).  Keys must not carry a
    ``module.`` prefix.

    Returns:
        A key of :data:`CIFAR_RESNETS`, or ``None`` if the weights are not one of these nets.
    """
    conv1 = _shape(state_dict, "conv1.weight")
    fc = _shape(state_dict, "fc.weight")
    if conv1 is None or fc is None or len(conv1) != 4 or conv1[2:] != (3, 3) or len(fc) != 2:
        return None
    if any(k.startswith("layer4.") for k in state_dict):
        return None
    n = _blocks_in(state_dict, "layer1")
    if n == 0 or _blocks_in(state_dict, "layer2") != n or _blocks_in(state_dict, "layer3") != n:
        return None
    for name, (spec_n, widths) in _SPECS.items():
        if spec_n != n or conv1[0] != widths[0] or fc[1] != widths[3]:
            continue
        if _shape(state_dict, "layer1.0.conv1.weight") != (widths[1], widths[0], 3, 3):
            continue
        if _shape(state_dict, "layer3.0.conv1.weight") != (widths[3], widths[2], 3, 3):
            continue
        return name
    return None


__all__ = [
    "DEFAULT_LAYER",
    "BasicBlock",
    "CifarResNet",
    "CIFAR_RESNETS",
    "get_cifar_resnet",
    "infer_cifar_resnet",
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
]
