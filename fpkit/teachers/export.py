"""A torch.export program as a tappable module that refuses, with the fix, inputs it was not exported for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpkit.errors import MismatchError
from fpkit.features import LAYER_TYPES_ATTR, NOT_TAPPABLE_ATTR
from fpkit.teachers.messages import first_line

_EXPORT_FIX = (
    "re-export it with a dynamic batch dimension, e.g. torch.export.export(model, (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), or pass --arch NAME to load its weights "
    "into a freshly built model"
)
# Messages of torch's own input checks and guards on an exported program's inputs.
_EXPORT_GUARD_WORDS = ("Expected input at", "Guard failed", "dynamic_shapes")


def export_module(ep: Any, path: Path) -> nn.Module:
    """The callable module of an ExportedProgram, with its module hierarchy restored.

    ``ep.module()`` inlines every submodule into one flat graph, so forward hooks on its
    (empty) submodules never fire; ``torch.export.unflatten`` rebuilds the submodules, so
    :class:`fpkit.features.LayerTap` can tap them.  The classes the submodules were exported
    from are recorded for :func:`fpkit.features.list_layers`, and inputs whose shape the program
    cannot take are refused with a :class:`MismatchError` instead of torch's guard failure.
    """
    try:
        module = torch.export.unflatten(ep)
    except Exception as e:  # fall back to the flat graph: it still runs, but cannot be tapped
        module = ep.module()
        setattr(
            module,
            NOT_TAPPABLE_ATTR,
            (
                f"{path} is a torch.export program whose module hierarchy could not be restored "
                f"({first_line(e)}), so its layers cannot be tapped; pass --arch NAME to load its "
                "weights into a tappable model"
            ),
        )
        return _guard_export_inputs(module, None, path)
    types: dict[str, str] = {}
    for node in ep.graph.nodes:
        for entry in (node.meta.get("nn_module_stack") or {}).values():
            try:
                fqn, cls = entry
            except (TypeError, ValueError):
                continue
            if isinstance(fqn, str) and fqn:
                types[fqn] = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"
    setattr(module, LAYER_TYPES_ATTR, types)
    return _guard_export_inputs(module, _export_input_dims(ep), path)


def _export_input_dims(ep: Any) -> list[int | None] | None:
    """Sizes of the first input of ``ep`` (None for a dynamic dimension), or None if unknown."""
    try:
        names = list(ep.graph_signature.user_inputs)
        if not names:
            return None
        node = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == names[0])
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            return None
        return [s if isinstance(s, int) else None for s in val.shape]
    except Exception:  # a missing check only loses the friendlier message
        return None


def _shape_text(dims: list[int | None] | torch.Size) -> str:
    return "[" + ", ".join("*" if d is None else str(int(d)) for d in dims) + "]"


def _guard_export_inputs(module: nn.Module, dims: list[int | None] | None, path: Path) -> nn.Module:
    """Make ``module`` (an exported program) refuse, with a MismatchError naming the fix, an input
    of a shape it was not exported for, rather than fail a guard deep in the graph."""
    inner = module.forward

    def forward(*args: Any, **kwargs: Any) -> Any:
        x = args[0] if args else None
        if dims is not None and isinstance(x, torch.Tensor):
            _check_export_input(tuple(x.shape), dims, path)
        try:
            return inner(*args, **kwargs)
        except (RuntimeError, AssertionError) as e:
            msg = first_line(e)
            if not any(word in str(e) for word in _EXPORT_GUARD_WORDS):
                raise
            shape = f" of shape {_shape_text(x.shape)}" if isinstance(x, torch.Tensor) else ""
            raise MismatchError(
                f"{path} is a torch.export program that rejected an input{shape} ({msg}); it only "
                f"takes the input shapes it was exported for: {_EXPORT_FIX}"
            ) from e

    module.forward = forward  # an instance attribute: nn.Module.__call__ (and its hooks) call it
    return module


def _check_export_input(shape: tuple[int, ...], dims: list[int | None], path: Path) -> None:
    if len(shape) == len(dims) and all(d is None or d == s for d, s in zip(dims, shape)):
        return
    if (
        len(shape) == len(dims)
        and dims[0] is not None
        and all(d is None or d == s for d, s in zip(dims[1:], shape[1:]))
    ):
        raise MismatchError(
            f"{path} is a torch.export program exported with a fixed batch of {dims[0]} (inputs "
            f"{_shape_text(dims)}), but fpkit runs it on batches of other sizes (here {shape[0]}); "
            f"{_EXPORT_FIX}"
        )
    raise MismatchError(
        f"{path} is a torch.export program exported for inputs of shape {_shape_text(dims)} but was "
        f"given {_shape_text(shape)}; pick the dataset it was made for, or re-export it with "
        "dynamic_shapes for the dimensions that vary"
    )


__all__ = ["export_module"]
