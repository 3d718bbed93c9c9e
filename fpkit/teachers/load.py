"""Load a teacher from a file (or the embedded one) into a frozen model with the facts that identify it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from fpkit.errors import ConfigError, FpkitFileNotFoundError, MismatchError, UntrustedCodeError
from fpkit.features import tap_refusal
from fpkit.models import CIFAR_RESNETS, DEFAULT_LAYER, infer_cifar_resnet
from fpkit.teachers.architectures import canonical_arch, module_arch, resolve_arch
from fpkit.teachers.checkpoint import (
    arch_from_checkpoint,
    classifier_rows,
    load_strict,
    split_checkpoint,
    strip_module_prefix,
)
from fpkit.teachers.digest import weights_sha256
from fpkit.teachers.read import load_code, read_safetensors, torch_load_safe, untrusted
from fpkit.teachers.sniff import sniff

SOURCE_KINDS = (
    "state_dict",
    "safetensors",
    "pickled_module",
    "torchscript",
    "torch_export",
    "embedded",
)
_EMBEDDED_FILE = "embedded_teacher.pt"


@dataclass(frozen=True)
class Teacher:
    """A loaded teacher: the model (eval mode, CPU, frozen) and what identifies it."""

    model: nn.Module
    arch: str
    weights_sha256: str
    num_params: int
    num_classes: int | None
    source_kind: str
    trusted_code: bool
    default_layer: str | None


def load_teacher(
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    in_channels: int = 3,
    trust_code: bool = False,
) -> Teacher:
    """Load a teacher from a checkpoint file, safely by default.

    Accepted without running code from the file: a ``.safetensors`` file, or a ``torch.save``
    file holding a state_dict, or a dict with it under ``model``/``state_dict``/
    ``model_state_dict``/``net`` (a leading ``module.`` is stripped from keys).  The
    architecture is ``arch`` (see :func:`resolve_arch`), else the checkpoint's own built-in
    ``arch`` entry, else inferred for the CIFAR ResNets.  ``num_classes`` defaults to the rows of
    the classifier weight.  A pickled whole module, a TorchScript or a torch.export archive is
    loaded only with ``trust_code=True``; given ``arch`` too, its weights are moved into a fresh
    ``arch`` model.  A torch.export program comes back with its module hierarchy restored
    (``torch.export.unflatten``) so that its layers can be tapped, and refuses inputs of a shape
    it was not exported for with a MismatchError; a TorchScript module cannot be tapped (see
    :func:`fpkit.features.tap_refusal`), so pass ``arch`` to tap one.

    Returns:
        A :class:`Teacher` whose model is on the CPU, in eval mode, with requires_grad False.

    Raises:
        FpkitFileNotFoundError: ``path`` does not exist.
        ConfigError: ``path`` is a folder; the architecture is unknown or cannot be inferred;
            safetensors is not installed.
        FormatError: the file is not a PyTorch checkpoint or safetensors file.
        UntrustedCodeError: loading would run code from the file and ``trust_code`` is False.
        MismatchError: the weights do not fit the architecture (keys or shapes).
    """
    p = Path(path)
    if not p.exists():
        raise FpkitFileNotFoundError(f"teacher file {p} does not exist; check the path")
    if p.is_dir():
        raise ConfigError(f"teacher path {p} is a folder; pass the checkpoint file inside it")
    kind = sniff(p)

    extras: dict = {}
    module: nn.Module | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    trusted = False
    if kind == "safetensors":
        state_dict, source_kind = read_safetensors(p), "safetensors"
    elif kind in ("torchscript", "torch_export"):
        what = "a TorchScript archive" if kind == "torchscript" else "a torch.export archive"
        if not trust_code:
            raise untrusted(p, f"{what} (compiled model code, not just weights)")
        module, source_kind, trusted = load_code(p, kind), kind, True
    else:
        try:
            obj = torch_load_safe(p)
        except UntrustedCodeError:
            if not trust_code:
                raise
            obj, trusted = load_code(p, "pickled_module"), True
        state_dict, module, extras = split_checkpoint(obj, p)
        source_kind = "pickled_module" if module is not None else "state_dict"

    if module is not None:
        return _from_module(module, p, source_kind, arch, num_classes, in_channels)

    assert state_dict is not None
    state_dict = strip_module_prefix(state_dict)
    if arch is None:
        arch = arch_from_checkpoint(extras) or infer_cifar_resnet(state_dict)
    if arch is None:
        raise ConfigError(
            f"cannot tell the architecture of {p} from its weights; pass --arch NAME "
            f"(one of {', '.join(CIFAR_RESNETS)}, torchvision:NAME, or package.module:callable)"
        )
    if num_classes is None:
        num_classes = classifier_rows(state_dict)
        if num_classes is None and isinstance(extras.get("num_classes"), int):
            num_classes = extras["num_classes"]
    if num_classes is None:
        raise ConfigError(f"cannot tell the number of classes of {p} from its weights; pass --num-classes N")
    model = resolve_arch(arch, num_classes, in_channels)
    load_strict(model, state_dict, str(p), arch)
    return _make_teacher(model, canonical_arch(arch), num_classes, source_kind, trusted)


def _from_module(
    module: nn.Module, p: Path, kind: str, arch: str | None, num_classes: int | None, in_channels: int
) -> Teacher:
    state_dict = module.state_dict()
    found = classifier_rows(state_dict)
    if arch is not None:
        classes = num_classes if num_classes is not None else found
        if classes is None:
            raise ConfigError(f"cannot tell the number of classes of {p}; pass --num-classes N")
        model = resolve_arch(arch, classes, in_channels)
        load_strict(model, strip_module_prefix(state_dict), str(p), arch)
        return _make_teacher(model, canonical_arch(arch), classes, kind, True)
    if num_classes is not None and found is not None and num_classes != found:
        raise MismatchError(
            f"{p} classifies into {found} classes but --num-classes is {num_classes}; "
            "drop --num-classes or pass the right file"
        )
    classes = found if found is not None else num_classes
    return _make_teacher(module, module_arch(module, kind), classes, kind, True)


def _make_teacher(model: nn.Module, arch: str, num_classes: int | None, source_kind: str, trusted: bool) -> Teacher:
    """Freeze ``model`` (CPU, eval mode, no gradients) and wrap it with what identifies it."""
    model = model.cpu()
    try:
        model.eval()
    except NotImplementedError:
        pass  # torch.export modules fix train/eval behaviour when exported
    for param in model.parameters():
        param.requires_grad_(False)
    state_dict = model.state_dict()
    # a model that cannot be tapped at all (TorchScript) has no default layer to tap
    is_cifar = (
        tap_refusal(model) is None
        and infer_cifar_resnet(state_dict) is not None
        and any(name == DEFAULT_LAYER for name, _ in model.named_modules())
    )
    return Teacher(
        model=model,
        arch=arch,
        weights_sha256=weights_sha256(state_dict),
        num_params=sum(p.numel() for p in model.parameters()),
        num_classes=num_classes,
        source_kind=source_kind,
        trusted_code=trusted,
        default_layer=DEFAULT_LAYER if is_cifar else None,
    )


def load_embedded_teacher() -> Teacher:
    """Load the small teacher shipped in ``fpkit/data`` (a resnet8 trained on CIFAR-10 JPEG q75).

    Raises:
        FpkitFileNotFoundError: the installation lacks the file; regenerate it with
            ``python examples/make_embedded.py``.
    """
    ref = resources.files("fpkit") / "data" / _EMBEDDED_FILE
    with resources.as_file(ref) as path:
        if not Path(path).is_file():
            raise FpkitFileNotFoundError(
                f"embedded teacher {path} is missing from this installation; "
                "regenerate it with python examples/make_embedded.py or reinstall fpkit"
            )
        loaded = load_teacher(path, arch="resnet8", num_classes=10)
    return Teacher(
        model=loaded.model,
        arch="resnet8",
        weights_sha256=loaded.weights_sha256,
        num_params=loaded.num_params,
        num_classes=loaded.num_classes,
        source_kind="embedded",
        trusted_code=False,
        default_layer=loaded.default_layer,
    )


__all__ = ["SOURCE_KINDS", "Teacher", "load_embedded_teacher", "load_teacher"]
