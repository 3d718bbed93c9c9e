"""What a loaded checkpoint holds: its state_dict, architecture and classes, and strict loading into a model."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpkit.errors import FormatError, MismatchError
from fpkit.models import CIFAR_RESNETS
from fpkit.teachers.architectures import torchvision_names
from fpkit.teachers.messages import first_line

_CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict", "net")
_CLASSIFIER_WORDS = ("classifier", "head", "fc")


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def split_checkpoint(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor] | None, nn.Module | None, dict]:
    """Split a loaded object into (state_dict, module, checkpoint extras)."""
    if isinstance(obj, nn.Module):
        return None, obj, {}
    if _is_state_dict(obj):
        return dict(obj), None, {}
    if isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            value = obj.get(key)
            if isinstance(value, nn.Module):
                return None, value, dict(obj)
            if _is_state_dict(value):
                return dict(value), None, dict(obj)
        keys = ", ".join(repr(k) for k in list(obj)[:10])
        raise FormatError(
            f"{path} holds a dict with no state_dict under {', '.join(map(repr, _CHECKPOINT_KEYS))} "
            f"(top-level keys: {keys}); re-save it with torch.save(model.state_dict(), path)"
        )
    raise FormatError(
        f"{path} holds a {type(obj).__name__}, not a state_dict; re-save it with torch.save(model.state_dict(), path)"
    )


def strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with a leading ``module.`` (left by DataParallel) dropped from its keys."""
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def classifier_rows(state_dict: Mapping[str, torch.Tensor]) -> int | None:
    """The number of classes, read from the rows of the classifier weight, or None if none is found."""
    fc = state_dict.get("fc.weight")
    if isinstance(fc, torch.Tensor) and fc.dim() == 2:
        return int(fc.shape[0])
    rows = None
    for key, value in state_dict.items():
        parts = key.split(".")
        if (
            parts[-1] == "weight"
            and value.dim() == 2
            and any(p.startswith(w) for p in parts[:-1] for w in _CLASSIFIER_WORDS)
        ):
            rows = int(value.shape[0])
    return rows


def arch_from_checkpoint(extras: Mapping[str, Any]) -> str | None:
    """A checkpoint's own 'arch' string, if it names a built-in architecture.

    ``package.module:callable`` names from a file are ignored: importing them would let the
    file choose code to run.
    """
    value = extras.get("arch")
    if not isinstance(value, str):
        return None
    value = value.strip()
    if value in CIFAR_RESNETS or value.startswith("torchvision:"):
        return value
    if ":" not in value and value in torchvision_names():
        return value
    return None


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, arch: str) -> None:
    """Load ``state_dict`` into ``model``; a MismatchError naming the keys or shapes that do not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    fix = "check --arch, --num-classes and --in-channels"
    if missing or unexpected:
        raise MismatchError(
            f"{source} does not fit architecture {arch}: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}; {fix}"
        )
    for key, value in expected.items():
        if tuple(value.shape) != tuple(state_dict[key].shape):
            raise MismatchError(
                f"{source} does not fit architecture {arch}: {key} has shape "
                f"{list(state_dict[key].shape)} in the file but {list(value.shape)} in the model; {fix}"
            )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise MismatchError(f"{source} does not fit architecture {arch} ({first_line(e)}); {fix}") from e


__all__ = ["arch_from_checkpoint", "classifier_rows", "load_strict", "split_checkpoint", "strip_module_prefix"]
