"""Tap a layer of a model by module name and pool its output to one vector per sample.

Used by both sides of teacher-once distillation: the teacher build taps the teacher's layer and
stores ``normalize(pool(layer(x))) @ R``; the student taps its own layer with the same pooling.
Both sides must use :func:`pool_features` and :func:`project_features` so that identical
features give bitwise-identical fingerprints.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fpkit.errors import ConfigError, MismatchError
from fpkit.models import infer_cifar_resnet

POOLINGS = ("avg", "token_mean", "token_cls", "none")
"""Concrete poolings. ``"auto"`` is also accepted wherever a pooling is asked for."""

_AUTO_BY_NDIM = {4: "avg", 3: "token_mean", 2: "none"}
_NDIM_BY_POOLING = {"avg": 4, "token_mean": 3, "token_cls": 3, "none": 2}
_SHAPE_BY_NDIM = {4: "[B, C, H, W]", 3: "[B, T, D]", 2: "[B, D]"}


def resolve_pooling(ndim: int, pooling: str) -> str:
    """Return the concrete pooling used for a layer output of rank ``ndim``.

    ``"auto"`` resolves to ``"avg"`` for 4-D ``[B, C, H, W]``, ``"token_mean"`` for 3-D
    ``[B, T, D]`` and ``"none"`` for 2-D ``[B, D]``.  A concrete pooling is returned unchanged
    if it fits the rank.  Record the result (not ``"auto"``) in files.

    Raises:
        ConfigError: unknown pooling name, or a pooling that does not fit ``ndim``.
    """
    if pooling != "auto" and pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; use one of: auto, {', '.join(POOLINGS)}")
    if ndim not in _AUTO_BY_NDIM:
        raise ConfigError(
            f"cannot pool a {ndim}-D layer output; tap a layer whose output is [B, C, H, W], [B, T, D] or [B, D]"
        )
    if pooling == "auto":
        return _AUTO_BY_NDIM[ndim]
    if _NDIM_BY_POOLING[pooling] != ndim:
        fits = [p for p, n in _NDIM_BY_POOLING.items() if n == ndim]
        raise ConfigError(
            f"pooling {pooling!r} needs a {_SHAPE_BY_NDIM[_NDIM_BY_POOLING[pooling]]} output but "
            f"the layer gave a {ndim}-D {_SHAPE_BY_NDIM[ndim]} one; use pooling "
            f"{' or '.join(repr(p) for p in fits)} (or 'auto')"
        )
    return pooling


def pool_features(x: torch.Tensor, pooling: str = "auto") -> torch.Tensor:
    """Pool a layer output to one float32 vector per sample.

    Args:
        x: layer output, ``[B, C, H, W]``, ``[B, T, D]`` or ``[B, D]``, any floating dtype.
        pooling: ``"avg"`` (mean over H, W), ``"token_mean"`` (mean over T), ``"token_cls"``
            (token 0), ``"none"`` (as is) or ``"auto"`` (see :func:`resolve_pooling`).

    Returns:
        float32 tensor ``[B, d]`` (``d`` = C or D), on ``x``'s device.  The cast to float32
        happens before the reduction, so half-precision (autocast) outputs are averaged in fp32.

    Raises:
        ConfigError: unknown pooling, or a pooling that does not fit the rank of ``x``.
    """
    if not isinstance(x, torch.Tensor):
        raise ConfigError(f"expected a tensor layer output, got {type(x).__name__}; tap a module returning a tensor")
    mode = resolve_pooling(x.ndim, pooling)
    x = x.float()
    if mode == "avg":
        return x.mean(dim=(2, 3))
    if mode == "token_mean":
        return x.mean(dim=1)
    if mode == "token_cls":
        return x[:, 0]
    return x


def project_features(pooled: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Fingerprint of pooled features: ``F.normalize(pooled, dim=1) @ R`` in float32.

    This is the exact arithmetic of both the teacher build and :class:`fpkit.student.FingerprintHead`
    (normalisation eps 1e-12, autocast disabled), so identical inputs give identical bits.

    Args:
        pooled: ``[B, d]`` pooled features (see :func:`pool_features`).
        R: ``[d, r]`` projection matrix; used as float32 on ``pooled``'s device.

    Returns:
        float32 ``[B, r]``.

    Raises:
        MismatchError: ``pooled`` is not 2-D, ``R`` is not 2-D, or the width is not ``R.shape[0]``.
    """
    if pooled.ndim != 2 or R.ndim != 2 or pooled.shape[1] != R.shape[0]:
        raise MismatchError(
            f"cannot project features of shape {list(pooled.shape)} with R of shape "
            f"{list(R.shape)}; features must be [B, d] with d = R.shape[0]"
        )
    with torch.autocast(device_type=pooled.device.type, enabled=False):
        R = R.to(device=pooled.device, dtype=torch.float32)
        return F.normalize(pooled.float(), dim=1) @ R


LAYER_TYPES_ATTR = "_fpkit_layer_types"
"""Attribute a loader may set on a model: ``{module name: qualified class name}`` of the modules a
compiled model was built from (a ``torch.export`` program's submodules are all
``InterpreterModule``); :func:`list_layers` shows these names and :func:`default_layer` reads them."""

LAYER_POOLINGS_ATTR = "_fpkit_layer_poolings"
"""Attribute a loader may set on a model: ``{module name: pooling}``, what ``"auto"`` pooling means
for that layer (a torchvision ViT's ``encoder``: ``token_cls``); read by :func:`layer_pooling`."""

NOT_TAPPABLE_ATTR = "_fpkit_not_tappable"
"""Attribute a loader may set on a model whose submodules cannot be tapped: the one-line reason and
fix, raised as :class:`ConfigError` by :class:`LayerTap`, :func:`list_layers` and
:func:`default_layer`."""

_INTERNAL_NAMES = frozenset({"_guards_fn"})
"""Submodules torch adds to compiled models that are not layers of the network."""


def tap_refusal(model: nn.Module) -> str | None:
    """Why the submodules of ``model`` cannot be tapped (one line, with the fix), or None if they can.

    TorchScript modules cannot be tapped: their submodules run inside the TorchScript
    interpreter, where Python forward hooks never fire (and ``get_submodule`` is unsupported).
    """
    if isinstance(model, torch.jit.ScriptModule):
        try:
            arch = infer_cifar_resnet(model.state_dict())
        except Exception:  # a hint only; never fail on it
            arch = None
        hint = f" ({arch} fits its weights)" if arch else ""
        return (
            "TorchScript teachers cannot be tapped at intermediate layers (forward hooks never "
            f"run inside TorchScript); pass --arch NAME{hint} to load its weights into a tappable "
            "model, or export the model with torch.export (with a dynamic batch dimension) instead"
        )
    reason = getattr(model, NOT_TAPPABLE_ATTR, None)
    return reason if isinstance(reason, str) and reason else None


def _require_tappable(model: nn.Module) -> None:
    reason = tap_refusal(model)
    if reason is not None:
        raise ConfigError(reason)


def _layer_types(model: nn.Module) -> dict[str, str]:
    types = getattr(model, LAYER_TYPES_ATTR, None)
    return types if isinstance(types, dict) else {}


def layer_pooling(model: nn.Module, name: str, ndim: int, pooling: str = "auto") -> str:
    """The concrete pooling of layer ``name`` of ``model`` for an output of rank ``ndim``.

    As :func:`resolve_pooling`, except that ``"auto"`` first takes the pooling the model's loader
    set for this layer (:data:`LAYER_POOLINGS_ATTR`), e.g. ``token_cls`` for the ``encoder`` of a
    torchvision ViT, which classifies from its class token.

    Raises:
        ConfigError: unknown pooling name, or a pooling that does not fit ``ndim``.
    """
    preset = getattr(model, LAYER_POOLINGS_ATTR, None)
    if pooling == "auto" and isinstance(preset, dict) and isinstance(preset.get(name), str):
        pooling = preset[name]
    return resolve_pooling(ndim, pooling)


def _is_linear(model: nn.Module, name: str, module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return _layer_types(model).get(name) in ("torch.nn.modules.linear.Linear", "torch.nn.Linear")


def _is_layer_name(name: str) -> bool:
    """A named submodule that is a layer of the network (not the root, not one torch added)."""
    return bool(name) and name.rpartition(".")[2] not in _INTERNAL_NAMES


def _named(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_modules() if _is_layer_name(name)]


def _unknown_layer_error(model: nn.Module, name: str) -> ConfigError:
    names = _named(model)
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return ConfigError(
        f"{type(model).__name__} has no module named {name!r}; {hint}"
        "list the names with `fpkit layers TEACHER` (or fpkit.features.list_layers(model))"
    )


class LayerTap:
    """Forward hooks that capture the outputs of named modules for one forward pass.

    Usage::

        with LayerTap(model, ["layer3"]) as tap:
            logits, feats = tap(x)          # feats["layer3"]: raw [B, C, H, W] output

    Works under ``torch.no_grad`` and autocast; captured tensors keep their autograd graph
    (the student needs it).  Tensors are kept only for the duration of one ``__call__`` and
    cleared afterwards; a plain ``model(x)`` while the tap is open captures nothing.  If a
    module returns a tuple or list, element 0 is captured.

    A module may run more than once in one forward pass (a module reused inside its parent, such
    as the one ``relu`` of a CIFAR ResNet's BasicBlock, which runs twice).  :attr:`calls` holds
    how often each tapped module ran in the last forward.  With ``repeated="last"`` (the default,
    used on the student side) the last call's output is captured; with ``repeated="error"``
    (used by ``fpkit build``) a repeated module is refused with a :class:`ConfigError` naming the
    nearest enclosing module that ran once.  A fingerprint file therefore always holds a layer
    that ran once in its teacher, so no teacher-side choice of call exists for a student to match.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], repeated: str = "last"):
        """Register forward hooks on ``model``'s modules named in ``layers`` (dotted names);
        ``repeated`` is "last" or "error" (see the class).

        Raises:
            ConfigError: empty or duplicate layer list, a name that is not a submodule
                (the message suggests close names), or a model whose submodules cannot be
                tapped (a TorchScript module; see :func:`tap_refusal`).
        """
        if isinstance(layers, str):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ConfigError("LayerTap needs at least one layer name; pass e.g. ['layer3']")
        if len(set(layers)) != len(layers):
            raise ConfigError(f"duplicate layer names in {layers}; list each layer once")
        if repeated not in ("last", "error"):
            raise ConfigError(f"repeated must be 'last' or 'error', got {repeated!r}")
        _require_tappable(model)
        self.model = model
        self.layers: tuple[str, ...] = tuple(layers)
        self.repeated = repeated
        self.calls: dict[str, int] = {}
        """How many times each tapped module (and each module enclosing one) ran in the last forward."""
        self._store: dict[str, torch.Tensor] = {}
        self._active = False
        self._handles: list[Any] = []
        modules = []
        for name in self.layers:
            if not isinstance(name, str) or not name:
                raise ConfigError(
                    f"layer names must be non-empty strings, got {name!r}; list the names with `fpkit layers TEACHER`"
                )
            try:
                modules.append(model.get_submodule(name))
            except AttributeError:
                raise _unknown_layer_error(model, name) from None
        for name, module in zip(self.layers, modules):
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        counted = set(self.layers)  # enclosing modules are counted too, to name one that runs once
        for name in self.layers:
            parent = name.rpartition(".")[0]
            while parent:
                if parent not in counted:
                    counted.add(parent)
                    hook = self._make_counter(parent)
                    self._handles.append(model.get_submodule(parent).register_forward_hook(hook))
                parent = parent.rpartition(".")[0]

    def _make_counter(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, _output: Any) -> None:
            if self._active:
                self.calls[name] = self.calls.get(name, 0) + 1

        return hook

    def _make_hook(self, name: str):
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if not self._active:
                return
            self.calls[name] = self.calls.get(name, 0) + 1
            if isinstance(output, (tuple, list)) and output:
                output = output[0]
            self._store[name] = output

        return hook

    def _repeated_error(self, name: str) -> ConfigError:
        parent = name.rpartition(".")[0]
        while parent and self.calls.get(parent, 0) != 1:
            parent = parent.rpartition(".")[0]
        hint = (
            f"tap a module that runs once, e.g. {parent!r}, which contains it"
            if parent
            else "tap a module that runs once"
        )
        return ConfigError(
            f"layer {name!r} runs {self.calls[name]} times in one forward pass (the module is reused), so "
            f"its output is ambiguous; {hint} (list the names with `fpkit layers TEACHER`)"
        )

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has removed the hooks."""
        return not self._handles

    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, torch.Tensor]]:
        """Run ``model(x, *args, **kwargs)`` and return ``(output, {layer: raw module output})``.

        Raises:
            ConfigError: the tap is closed, a tapped module did not run during the forward
                pass, or it returned something other than a tensor.
        """
        if self.closed:
            raise ConfigError("this LayerTap is closed; create a new LayerTap to tap the model again")
        self._store.clear()
        self.calls = {}
        self._active = True
        try:
            output = self.model(x, *args, **kwargs)
            captured = dict(self._store)
        finally:
            self._active = False
            self._store.clear()
        feats: dict[str, torch.Tensor] = {}
        for name in self.layers:
            if name not in captured:
                raise ConfigError(
                    f"layer {name!r} did not run during the forward pass; tap a module on the path from input to output"
                )
            if self.repeated == "error" and self.calls[name] > 1:
                raise self._repeated_error(name)
            value = captured[name]
            if not isinstance(value, torch.Tensor):
                raise ConfigError(
                    f"layer {name!r} returned {type(value).__name__}, not a tensor; "
                    "tap a submodule that returns a tensor"
                )
            feats[name] = value
        return output, feats

    def close(self) -> None:
        """Remove the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._store.clear()

    def __enter__(self) -> LayerTap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _previous_sibling(model: nn.Module, name: str) -> str | None:
    """Full name of the child registered just before ``name`` under the same parent, walking
    up the ancestors while ``name`` is the first child; None if there is none."""
    while name:
        parent_name, _, leaf = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        children = [child for child, _ in parent.named_children()]
        idx = children.index(leaf)
        if idx > 0:
            prev = children[idx - 1]
            return f"{parent_name}.{prev}" if parent_name else prev
        name = parent_name
    return None


def default_layer(model: nn.Module) -> str:
    """Name of the module whose output feeds the final classifier.

    Rules, in order:

    1. ``layer3`` and ``fc`` and no ``layer4`` (RepDistiller-style CIFAR ResNets) -> ``"layer3"``.
    2. ``layer4`` and ``fc`` (torchvision ResNets) -> ``"layer4"``.
    3. Otherwise take the last ``nn.Linear`` in ``named_modules`` order and return the child
       registered just before it under the same parent; if the Linear is its parent's first
       child, the same is done for the parent, and so on up (so a container of the Linear is
       never chosen).  Registration order is taken as forward order, which is a heuristic.

    A ``torch.export`` teacher's ``InterpreterModule`` counts as ``nn.Linear`` when it was built
    from one (see :data:`LAYER_TYPES_ATTR`).

    Raises:
        ConfigError: no ``nn.Linear``, or nothing registered before it; pass ``--layer``.  Or the
            model cannot be tapped at all (a TorchScript module; see :func:`tap_refusal`).
    """
    _require_tappable(model)

    def has(attr: str) -> bool:
        return isinstance(getattr(model, attr, None), nn.Module)

    if has("layer3") and has("fc") and not has("layer4"):
        return "layer3"
    if has("layer4") and has("fc"):
        return "layer4"
    linears = [name for name, m in model.named_modules() if name and _is_linear(model, name, m)]
    if linears:
        prev = _previous_sibling(model, linears[-1])
        if prev is not None:
            return prev
    raise ConfigError(
        f"cannot guess which layer of {type(model).__name__} feeds its classifier; pass --layer "
        "NAME (list the names with `fpkit layers TEACHER`)"
    )


def list_layers(model: nn.Module) -> list[tuple[str, str]]:
    """``(name, class name)`` of every submodule :class:`LayerTap` can tap (the root excluded), in
    registration order.

    Submodules torch adds to compiled models (``_guards_fn``) are left out; for a ``torch.export``
    teacher the class names are those of the modules it was exported from.

    Raises:
        ConfigError: the model cannot be tapped at all (a TorchScript module; see
            :func:`tap_refusal`), so that no name is offered that a build would then refuse.
    """
    _require_tappable(model)
    types = _layer_types(model)
    out = []
    for name, m in model.named_modules():
        if not _is_layer_name(name):
            continue
        qualified = types.get(name)
        out.append((name, qualified.rpartition(".")[2] if qualified else type(m).__name__))
    return out


__all__ = [
    "POOLINGS",
    "pool_features",
    "resolve_pooling",
    "layer_pooling",
    "project_features",
    "LayerTap",
    "default_layer",
    "list_layers",
    "tap_refusal",
]
