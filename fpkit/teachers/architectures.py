"""Architectures by name: build an untrained model from a name, and name a model or an architecture."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from torch import nn

from fpkit.errors import ConfigError
from fpkit.models import CIFAR_RESNETS, CifarResNet, infer_cifar_resnet
from fpkit.normalization import NORMALIZE, Stats


@dataclass(frozen=True)
class LayerDefault:
    """The layer a build taps by default in an architecture, its pooling, and why (one phrase)."""

    layer: str
    pooling: str
    why: str


_RESNET = LayerDefault("layer4", "avg", "the last stage; averaged over H, W it is what fc classifies")
_CONVNEXT = LayerDefault(
    "classifier.0", "avg", "the LayerNorm2d after avgpool: what classifier.2 classifies (pre-logits)"
)
_VIT = LayerDefault(
    "encoder", "token_cls", "the tokens after encoder.ln; the class token (token 0) is what heads classifies"
)
TORCHVISION_DEFAULTS: dict[str, LayerDefault] = {
    **dict.fromkeys(
        ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
        + ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"),
        _RESNET,
    ),
    **dict.fromkeys(("convnext_tiny", "convnext_small", "convnext_base", "convnext_large"), _CONVNEXT),
    **dict.fromkeys(("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"), _VIT),
}
"""The default layer and pooling of torchvision's classifiers, by model name: the one table that
``fpkit build`` (through :attr:`fpkit.teachers.Teacher.default_layer`) and ``fpkit layers`` use.
Models not listed fall back to :func:`fpkit.features.default_layer`'s rules and ``auto`` pooling."""

_DEFAULTS_BY_CLASS = {
    "torchvision.models.resnet:ResNet": _RESNET,
    "torchvision.models.convnext:ConvNeXt": _CONVNEXT,
    "torchvision.models.vision_transformer:VisionTransformer": _VIT,
}
"""The same defaults for a whole pickled torchvision module, named by :func:`module_arch`."""
_NOT_CLASSIFIERS = ("detection", "segmentation", "video", "optical_flow", "quantization")


def arch_default(arch: str) -> LayerDefault | None:
    """The table's default layer for an architecture name (``torchvision:NAME``, or the class of a
    pickled torchvision module, ``torchvision.models.resnet:ResNet``), or None."""
    if arch.startswith("torchvision:"):
        return TORCHVISION_DEFAULTS.get(arch.split(":", 1)[1])
    return _DEFAULTS_BY_CLASS.get(arch)


def arch_normalization(arch: str) -> tuple[Stats, str] | None:
    """The input statistics an architecture implies, and why, or None.

    torchvision's image classifiers (``torchvision.models``, not its detection, segmentation,
    video or optical-flow models) are ImageNet architectures: their weights expect ImageNet's
    statistics.  A build uses these only when neither the checkpoint nor the dataset records
    statistics (see :func:`fpkit.normalization.choose_normalization`).
    """
    if arch.startswith("torchvision:"):
        if arch.split(":", 1)[1] not in _classifier_names():
            return None
    elif not _is_classifier_class(arch):
        return None
    return NORMALIZE["imagenet"], f"{arch} is a torchvision ImageNet architecture: ImageNet's statistics"


def resolve_arch(arch: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build an untrained model from an architecture name.

    ``arch`` is one of: a CIFAR ResNet name (``resnet56``, see
    :data:`fpkit.models.CIFAR_RESNETS`); ``torchvision:NAME`` or a bare torchvision model name
    (built with ``torchvision.models.get_model(NAME, weights=None, num_classes=...)``); or
    ``package.module:callable``, which is imported and called with ``num_classes=`` (and
    ``in_channels=`` when it is not 3).  Importing that module runs its code: name only code
    you trust.

    Raises:
        ConfigError: the name is unknown, cannot be imported, or does not build an nn.Module.
    """
    if not isinstance(arch, str) or not arch.strip():
        raise ConfigError(f"architecture must be a non-empty string, got {arch!r}; pass --arch NAME")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    arch = arch.strip()
    if arch in CIFAR_RESNETS:
        return CIFAR_RESNETS[arch](num_classes=num_classes, in_channels=in_channels)
    if arch.startswith("torchvision:"):
        return _torchvision_model(arch.split(":", 1)[1], num_classes, in_channels)
    if ":" in arch:
        return _callable_model(arch, num_classes, in_channels)
    if arch in torchvision_names():
        return _torchvision_model(arch, num_classes, in_channels)
    raise ConfigError(
        f"unknown architecture {arch!r}; pass --arch as a CIFAR ResNet name "
        f"({', '.join(CIFAR_RESNETS)}), torchvision:NAME, or package.module:callable"
    )


def canonical_arch(arch: str) -> str:
    """The name a teacher built by :func:`resolve_arch` records: bare torchvision names get ``torchvision:``."""
    arch = arch.strip()
    if arch in CIFAR_RESNETS or ":" in arch:
        return arch
    return f"torchvision:{arch}"


def module_arch(model: nn.Module, kind: str) -> str:
    """The name recorded for a teacher loaded as a whole module of source kind ``kind``."""
    if isinstance(model, CifarResNet):
        name = infer_cifar_resnet(model.state_dict())
        if name is not None:
            return name
    if kind == "torchscript":
        return f"torchscript:{getattr(model, 'original_name', type(model).__name__)}"
    if kind == "torch_export":
        return "torch_export"
    cls = type(model)
    return f"{cls.__module__}:{cls.__qualname__}"


def torchvision_names() -> list[str]:
    """The model names torchvision knows (none when it is not installed)."""
    try:
        import torchvision
    except ImportError:
        return []
    return list(torchvision.models.list_models())


def _is_classifier_class(arch: str) -> bool:
    """``torchvision.models.X:Class``, X not one of its detection, segmentation, video... packages."""
    module = arch.partition(":")[0].split(".")
    return len(module) == 3 and module[:2] == ["torchvision", "models"] and module[2] not in _NOT_CLASSIFIERS


def _classifier_names() -> list[str]:
    try:
        import torchvision
    except ImportError:
        return []
    return list(torchvision.models.list_models(module=torchvision.models))


def _torchvision_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        import torchvision
    except ImportError as e:
        raise ConfigError(f"architecture torchvision:{name} needs torchvision; pip install torchvision") from e
    if in_channels != 3:
        raise ConfigError(
            f"torchvision:{name} takes 3 input channels, not {in_channels}; "
            "use a CIFAR ResNet name or package.module:callable for other inputs"
        )
    if name not in torchvision.models.list_models():
        raise ConfigError(
            f"torchvision has no model {name!r}; see torchvision.models.list_models() for the names it knows"
        )
    try:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"cannot build torchvision:{name} with num_classes={num_classes}: {e}") from e


def _callable_model(arch: str, num_classes: int, in_channels: int) -> nn.Module:
    module_name, _, attr_path = arch.partition(":")
    if not module_name or not attr_path:
        raise ConfigError(f"architecture {arch!r} must look like package.module:callable")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"cannot import module {module_name!r} for architecture {arch!r}: {e}; "
            "check the name and that it is on PYTHONPATH"
        ) from e
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"module {module_name!r} has no attribute {attr_path!r}; check --arch")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{arch!r} is not callable; --arch must name a function or class")
    kwargs: dict[str, int] = {"num_classes": num_classes}
    if in_channels != 3:
        kwargs["in_channels"] = in_channels
    try:
        model = target(**kwargs)
    except TypeError as e:
        raise ConfigError(
            f"calling {arch}({', '.join(f'{k}={v}' for k, v in kwargs.items())}) failed: {e}; "
            "the callable must accept these keyword arguments"
        ) from e
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{arch} returned a {type(model).__name__}, not a torch.nn.Module")
    return model


__all__ = [
    "TORCHVISION_DEFAULTS",
    "LayerDefault",
    "arch_default",
    "arch_normalization",
    "canonical_arch",
    "module_arch",
    "resolve_arch",
    "torchvision_names",
]
