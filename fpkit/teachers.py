"""Load a teacher network safely, and identify it by a digest of its weights.

The safe path is *architecture by name + weights*: a ``state_dict`` read with
``torch.load(weights_only=True)`` or from a ``.safetensors`` file, loaded strictly into a model
built from a known name (a CIFAR ResNet, a torchvision model) or from ``package.module:callable``
the user names.  Files that can only be loaded by running code from them (a pickled whole
``nn.Module``, a TorchScript archive, a ``torch.export`` archive) are refused with
:class:`~fpkit.errors.UntrustedCodeError` unless ``trust_code=True``; the refusal happens before
anything from the file is unpickled or executed.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pickle
import re
import struct
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpkit.errors import (
    ConfigError,
    FormatError,
    FpkitFileNotFoundError,
    MismatchError,
    UntrustedCodeError,
)
from fpkit.features import LAYER_TYPES_ATTR, NOT_TAPPABLE_ATTR, tap_refusal
from fpkit.models import CIFAR_RESNETS, DEFAULT_LAYER, CifarResNet, infer_cifar_resnet

SOURCE_KINDS = (
    "state_dict",
    "safetensors",
    "pickled_module",
    "torchscript",
    "torch_export",
    "embedded",
)
_CHECKPOINT_KEYS = ("model", "state_dict", "model_state_dict", "net")
_CLASSIFIER_WORDS = ("classifier", "head", "fc")
_EMBEDDED_FILE = "embedded_teacher.pt"
_TRUST_FIX = (
    "pass --trust-teacher-code (trust_code=True) only if you trust its author, or re-save it "
    "as a state_dict with torch.save(model.state_dict(), path) and pass --arch NAME"
)
# torch.save's legacy (non-zip) format starts with the pickled magic number 0x1950a86a20f9469cfc6c.
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


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


# --------------------------------------------------------------------------- weights digest


def weights_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Return the hex SHA-256 identifying a set of weights.

    Definition (normative, part of fpkit's file format): one SHA-256 over the entries of
    ``state_dict`` taken in sorted key order (Python ``sorted`` on the ``str`` keys, i.e. by
    code point).  Each entry contributes, concatenated with nothing in between entries:

    1. the key encoded as UTF-8, then a NUL byte (``0x00``);
    2. the dtype name without the ``torch.`` prefix (``float32``, ``float16``, ``bfloat16``,
       ``int64``, ``bool``...), ASCII, then NUL;
    3. the shape as decimal integers joined by ``,`` with no spaces (the empty string for a
       0-dim tensor, e.g. ``num_batches_tracked``), ASCII, then NUL;
    4. the tensor's raw element bytes: C-contiguous (row-major), little-endian, as stored on
       the CPU.

    Buffers count like parameters, so pass ``model.state_dict()`` (BatchNorm running statistics
    and ``num_batches_tracked`` included).  Bytes are hashed after any dtype conversion done by
    loading into the model, so the same model gives the same digest whatever file it came from.

    Raises:
        FormatError: a value is not a tensor.
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        tensor = state_dict[key]
        if not isinstance(tensor, torch.Tensor):
            raise FormatError(
                f"state_dict entry {key!r} is a {type(tensor).__name__}, not a tensor; "
                "pass a mapping of names to tensors"
            )
        h.update(key.encode("utf-8") + b"\0")
        h.update(str(tensor.dtype).removeprefix("torch.").encode("ascii") + b"\0")
        h.update(",".join(str(int(s)) for s in tensor.shape).encode("ascii") + b"\0")
        h.update(_tensor_bytes(tensor))
    return h.hexdigest()


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    t = tensor.detach().to("cpu").contiguous().reshape(-1)
    if t.numel() == 0:
        return b""
    raw = t.view(torch.uint8)
    if sys.byteorder != "little" and t.element_size() > 1:
        raw = raw.view(-1, t.element_size()).flip(1).reshape(-1)
    return raw.numpy().tobytes()


# --------------------------------------------------------------------------- architectures


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
    if arch in _torchvision_names():
        return _torchvision_model(arch, num_classes, in_channels)
    raise ConfigError(
        f"unknown architecture {arch!r}; pass --arch as a CIFAR ResNet name "
        f"({', '.join(CIFAR_RESNETS)}), torchvision:NAME, or package.module:callable"
    )


def _canonical_arch(arch: str) -> str:
    arch = arch.strip()
    if arch in CIFAR_RESNETS or ":" in arch:
        return arch
    return f"torchvision:{arch}"


def _torchvision_names() -> list[str]:
    try:
        import torchvision
    except ImportError:
        return []
    return list(torchvision.models.list_models())


def _torchvision_model(name: str, num_classes: int, in_channels: int) -> nn.Module:
    try:
        import torchvision
    except ImportError as e:
        raise ConfigError(
            f"architecture torchvision:{name} needs torchvision; pip install torchvision"
        ) from e
    if in_channels != 3:
        raise ConfigError(
            f"torchvision:{name} takes 3 input channels, not {in_channels}; "
            "use a CIFAR ResNet name or package.module:callable for other inputs"
        )
    if name not in torchvision.models.list_models():
        raise ConfigError(
            f"torchvision has no model {name!r}; see torchvision.models.list_models() "
            "for the names it knows"
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


# --------------------------------------------------------------------------- file sniffing


def _sniff(path: Path) -> str:
    """Classify a file without unpickling or running anything from it.

    Returns one of "safetensors", "torchscript", "torch_export", "torch_zip", "pickle".
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix == ".safetensors" or _looks_like_safetensors(path, head):
        return "safetensors"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise FormatError(
                f"{path} is a damaged zip file, not a PyTorch checkpoint or safetensors file; "
                "check the file"
            ) from e
        inner = [n.split("/", 1)[1] if "/" in n else n for n in names]
        if path.suffix == ".pt2" or any(
            n == "archive_format" or n.startswith("serialized_exported_program") for n in inner
        ):
            return "torch_export"
        if any(n == "constants.pkl" or n.startswith("code/") for n in inner):
            return "torchscript"
        return "torch_zip"
    if path.suffix == ".pt2":
        return "torch_export"
    if head.startswith(_LEGACY_TORCH_MAGIC) or (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"):
        return "pickle"
    raise FormatError(
        f"{path} is not a PyTorch checkpoint or safetensors file; "
        "pass a file written by torch.save or safetensors"
    )


def _looks_like_safetensors(path: Path, head: bytes) -> bool:
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= path.stat().st_size - 8 and head[8:9] == b"{"


def _untrusted(path: Path, what: str) -> UntrustedCodeError:
    return UntrustedCodeError(
        f"{path} is {what}; loading it would run code from the file. Fix: {_TRUST_FIX}"
    )


# --------------------------------------------------------------------------- reading files


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as e:
        raise ConfigError(
            f"{path} is a safetensors file and the safetensors package is missing; "
            "pip install safetensors"
        ) from e
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise FormatError(
            f"{path} is not a readable safetensors file ({e}); check or re-save the file"
        ) from e


def _torch_load_safe(path: Path) -> Any:
    """``torch.load(weights_only=True)``; UntrustedCodeError when it needs arbitrary pickles."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        ref = f" (it references {found.group(1)})" if found else ""
        raise UntrustedCodeError(
            f"{path} holds pickled Python objects beyond tensors, such as a whole nn.Module "
            f"saved with torch.save(model, path){ref}; loading it would run code from the file. "
            f"Fix: {_TRUST_FIX}"
        ) from e
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, KeyError) as e:
        raise FormatError(
            f"{path} is not a PyTorch checkpoint or safetensors file ({_first_line(e)}); "
            "pass a file written by torch.save or safetensors"
        ) from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def _load_code(path: Path, kind: str) -> Any:
    """Load a file by executing code from it; only called after trust was granted."""
    try:
        if kind == "torchscript":
            return torch.jit.load(str(path), map_location="cpu")
        if kind == "torch_export":
            return _export_module(torch.export.load(str(path)), path)
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # any failure of foreign code is reported as a bad file
        raise FormatError(f"{path} could not be loaded as {kind} ({_first_line(e)}); check the file") from e


# --------------------------------------------------------------------------- torch.export programs

_EXPORT_FIX = (
    "re-export it with a dynamic batch dimension, e.g. torch.export.export(model, (x,), "
    "dynamic_shapes=({0: torch.export.Dim('batch')},)), or pass --arch NAME to load its weights "
    "into a freshly built model"
)
# Messages of torch's own input checks and guards on an exported program's inputs.
_EXPORT_GUARD_WORDS = ("Expected input at", "Guard failed", "dynamic_shapes")


def _export_module(ep: Any, path: Path) -> nn.Module:
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
        setattr(module, NOT_TAPPABLE_ATTR, (
            f"{path} is a torch.export program whose module hierarchy could not be restored "
            f"({_first_line(e)}), so its layers cannot be tapped; pass --arch NAME to load its "
            "weights into a tappable model"
        ))
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
            msg = _first_line(e)
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
    if len(shape) == len(dims) and dims[0] is not None and all(
        d is None or d == s for d, s in zip(dims[1:], shape[1:])
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


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _extract(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor] | None, nn.Module | None, dict]:
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
        f"{path} holds a {type(obj).__name__}, not a state_dict; "
        "re-save it with torch.save(model.state_dict(), path)"
    )


def _strip_module_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def _classifier_rows(state_dict: Mapping[str, torch.Tensor]) -> int | None:
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


# --------------------------------------------------------------------------- building models


def _load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, arch: str) -> None:
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
        raise MismatchError(f"{source} does not fit architecture {arch} ({_first_line(e)}); {fix}") from e


def _finish(
    model: nn.Module, arch: str, num_classes: int | None, source_kind: str, trusted: bool
) -> Teacher:
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


def _module_arch(model: nn.Module, kind: str) -> str:
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


def _arch_from_checkpoint(extras: Mapping[str, Any]) -> str | None:
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
    if ":" not in value and value in _torchvision_names():
        return value
    return None


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
    kind = _sniff(p)

    extras: dict = {}
    module: nn.Module | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    trusted = False
    if kind == "safetensors":
        state_dict, source_kind = _read_safetensors(p), "safetensors"
    elif kind in ("torchscript", "torch_export"):
        what = "a TorchScript archive" if kind == "torchscript" else "a torch.export archive"
        if not trust_code:
            raise _untrusted(p, f"{what} (compiled model code, not just weights)")
        module, source_kind, trusted = _load_code(p, kind), kind, True
    else:
        try:
            obj = _torch_load_safe(p)
        except UntrustedCodeError:
            if not trust_code:
                raise
            obj, trusted = _load_code(p, "pickled_module"), True
        state_dict, module, extras = _extract(obj, p)
        source_kind = "pickled_module" if module is not None else "state_dict"

    if module is not None:
        return _from_module(module, p, source_kind, arch, num_classes, in_channels)

    assert state_dict is not None
    state_dict = _strip_module_prefix(state_dict)
    if arch is None:
        arch = _arch_from_checkpoint(extras) or infer_cifar_resnet(state_dict)
    if arch is None:
        raise ConfigError(
            f"cannot tell the architecture of {p} from its weights; pass --arch NAME "
            f"(one of {', '.join(CIFAR_RESNETS)}, torchvision:NAME, or package.module:callable)"
        )
    if num_classes is None:
        num_classes = _classifier_rows(state_dict)
        if num_classes is None and isinstance(extras.get("num_classes"), int):
            num_classes = extras["num_classes"]
    if num_classes is None:
        raise ConfigError(f"cannot tell the number of classes of {p} from its weights; pass --num-classes N")
    model = resolve_arch(arch, num_classes, in_channels)
    _load_strict(model, state_dict, str(p), arch)
    return _finish(model, _canonical_arch(arch), num_classes, source_kind, trusted)


def _from_module(
    module: nn.Module, p: Path, kind: str, arch: str | None, num_classes: int | None, in_channels: int
) -> Teacher:
    state_dict = module.state_dict()
    found = _classifier_rows(state_dict)
    if arch is not None:
        classes = num_classes if num_classes is not None else found
        if classes is None:
            raise ConfigError(f"cannot tell the number of classes of {p}; pass --num-classes N")
        model = resolve_arch(arch, classes, in_channels)
        _load_strict(model, _strip_module_prefix(state_dict), str(p), arch)
        return _finish(model, _canonical_arch(arch), classes, kind, True)
    if num_classes is not None and found is not None and num_classes != found:
        raise MismatchError(
            f"{p} classifies into {found} classes but --num-classes is {num_classes}; "
            "drop --num-classes or pass the right file"
        )
    classes = found if found is not None else num_classes
    return _finish(module, _module_arch(module, kind), classes, kind, True)


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


__all__ = [
    "SOURCE_KINDS",
    "Teacher",
    "load_embedded_teacher",
    "load_teacher",
    "resolve_arch",
    "weights_sha256",
]
