"""Model definitions fpkit knows by name (RepDistiller-compatible CIFAR ResNets)."""

from fpkit.models.cifar_resnet import (
    CIFAR_RESNETS,
    DEFAULT_LAYER,
    BasicBlock,
    CifarResNet,
    get_cifar_resnet,
    infer_cifar_resnet,
    resnet8,
    resnet8x4,
    resnet14,
    resnet20,
    resnet32,
    resnet32x4,
    resnet44,
    resnet56,
    resnet110,
)

__all__ = [
    "CIFAR_RESNETS",
    "DEFAULT_LAYER",
    "BasicBlock",
    "CifarResNet",
    "get_cifar_resnet",
    "infer_cifar_resnet",
    "resnet8",
    "resnet8x4",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet32x4",
    "resnet44",
    "resnet56",
    "resnet110",
]
