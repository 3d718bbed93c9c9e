"""Load a teacher from a file (or the embedded one) into a frozen model with the facts that identify it."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from fpkit.errors import ConfigError, FpkitFileNotFoundError, MismatchError, UntrustedCodeError
from fpkit.features import LAYER_POOLINGS_ATTR, tap_refusal
from fpkit.models import CIFAR_RESNETS, DEFAULT_LAYER, infer_cifar_resnet
from fpkit.normalization import Stats, recorded_normalization
from fpkit.teachers.architectures import (
    arch_default,
    arch_normalization,
    canonical_arch,
    module_arch,
    resolve_arch,
)
from fpkit.teachers.checkpoint import (
    Checkpoint,
    arch_from_checkpoint,
    cifar_prefixes,
    classifier_rows,
    describe_keys,
    fit_keys,
    fit_notes,
    join_key,
    load_strict,
    split_checkpoint,
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
    """A loaded teacher: the model (eval mode, CPU, frozen) and what identifies it.

    ``notes`` are sentences for the user on choices the loader made that change which weights were
    loaded or how their keys were read: the entry taken from a checkpoint holding several (EMA or
    plain weights), a key prefix stripped (``model.``, ``module.``), keys ignored.  A command line
    prints each, e.g. as ``[fpkit build] note: ...``; they are empty for a plain state_dict.

    ``normalize`` is the input normalisation ``(mean, std)`` the checkpoint records (top-level
    ``normalize: {mean, std}`` or ``mean``/``std``; see
    :func:`fpkit.normalization.recorded_normalization`), None when it records none.
    ``arch_normalize`` is ``((mean, std), why)`` that the architecture implies (torchvision's
    classifiers: ImageNet's; see :func:`~fpkit.teachers.architectures.arch_normalization`), used
    only where neither the checkpoint nor the dataset records statistics.

    ``default_layer`` is the layer a build taps when ``--layer`` is not given (None: found by
    :func:`fpkit.features.default_layer`'s rules); ``default_pooling`` its pooling where the
    architecture's table (:data:`~fpkit.teachers.architectures.TORCHVISION_DEFAULTS`) names one,
    which is also what ``auto`` pooling gives for that layer (:func:`fpkit.features.layer_pooling`).
    """

    model: nn.Module
    arch: str
    weights_sha256: str
    num_params: int
    num_classes: int | None
    source_kind: str
    trusted_code: bool
    default_layer: str | None
    notes: tuple[str, ...] = ()
    normalize: Stats | None = None
    default_pooling: str | None = None
    arch_normalize: tuple[Stats, str] | None = None


def load_teacher(
    path: str | os.PathLike,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    in_channels: int = 3,
    trust_code: bool = False,
    checkpoint_key: str | None = None,
) -> Teacher:
    """Load a teacher from a checkpoint file, safely by default.

    Accepted without running code from the file: a ``.safetensors`` file, or a ``torch.save``
    file holding a state_dict, or a dict with it under ``state_dict_ema``/``model_ema`` (timm's
    EMA weights, taken first as timm does), ``model``/``state_dict``/``model_state_dict``/``net``
    (see :func:`~fpkit.teachers.checkpoint.split_checkpoint`).  ``checkpoint_key`` picks the
    weights instead, as ``ENTRY[.PREFIX]``: ``state_dict`` for timm's plain weights beside its EMA
    ones, ``state_dict.teacher`` for the keys ``teacher.*`` of a Lightning checkpoint.  A key
    prefix left by the trainer (``module.`` from DataParallel/DDP, ``_orig_mod.`` from
    torch.compile, ``model.``/``net.`` from a Lightning module, or nested, ``model.module.``) is
    stripped when the keys under it are exactly the architecture's; ``Teacher.notes`` says so.  The
    architecture is ``arch`` (see :func:`resolve_arch`), else the checkpoint's own built-in
    ``arch`` entry, else inferred for the CIFAR ResNets.  ``num_classes`` defaults to the rows of
    the classifier weight.  The digest ``weights_sha256`` is of the model's own state_dict after
    loading, so the same weights saved by different trainers, with or without prefixes, get one
    digest.  A pickled whole module, a TorchScript or a torch.export archive is
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
            safetensors is not installed; ``checkpoint_key`` names nothing in the file; the file
            holds several networks that fit and ``checkpoint_key`` does not pick one.
        FormatError: the file is not a PyTorch checkpoint or safetensors file, or holds no
            weights where they are looked for.
        UntrustedCodeError: loading would run code from the file and ``trust_code`` is False.
        MismatchError: the weights do not fit the architecture (keys or shapes).
    """
    p = Path(path)
    if not p.exists():
        raise FpkitFileNotFoundError(f"teacher file {p} does not exist; check the path")
    if p.is_dir():
        raise ConfigError(f"teacher path {p} is a folder; pass the checkpoint file inside it")
    kind = sniff(p)

    trusted = False
    if kind == "safetensors":
        obj, source_kind = read_safetensors(p), "safetensors"
    elif kind in ("torchscript", "torch_export"):
        what = "a TorchScript archive" if kind == "torchscript" else "a torch.export archive"
        if not trust_code:
            raise untrusted(p, f"{what} (compiled model code, not just weights)")
        obj, source_kind, trusted = load_code(p, kind), kind, True
    else:
        try:
            obj = torch_load_safe(p)
        except UntrustedCodeError:
            if not trust_code:
                raise
            obj, trusted = load_code(p, "pickled_module"), True
        source_kind = "state_dict"
    found = split_checkpoint(obj, p, checkpoint_key)
    if found.module is not None:
        if source_kind == "state_dict":
            source_kind = "pickled_module"
        teacher = _from_module(found, p, source_kind, arch, num_classes, in_channels)
    else:
        assert found.state_dict is not None
        model, arch, num_classes, notes = _fit_weights(found, p, arch, num_classes, in_channels)
        teacher = _make_teacher(model, canonical_arch(arch), num_classes, source_kind, trusted, found.notes + notes)
    return replace(teacher, normalize=recorded_normalization(found.extras))


def _classes(state_dict: dict[str, torch.Tensor], extras: dict) -> int | None:
    rows = classifier_rows(state_dict)
    if rows is None and isinstance(extras.get("num_classes"), int):
        rows = extras["num_classes"]
    return rows


def _fit_weights(
    found: Checkpoint, p: Path, arch: str | None, num_classes: int | None, in_channels: int
) -> tuple[nn.Module, str, int, tuple[str, ...]]:
    """Build the architecture and load ``found.state_dict`` into it, stripping a key prefix that makes it fit.

    Returns:
        The loaded model, the architecture name, the number of classes, and notes on what was stripped.

    Raises:
        ConfigError: no architecture or class count can be told; several networks fit.
        MismatchError: the weights do not fit the architecture.
    """
    state_dict = found.state_dict
    assert state_dict is not None
    if arch is None:
        arch = arch_from_checkpoint(found.extras)
    if arch is None:
        nets = cifar_prefixes(state_dict)
        if len(nets) > 1:
            choices = ", ".join(join_key(found.key_path, prefix) for prefix in sorted(nets))
            raise ConfigError(
                f"{p} holds {len(nets)} networks: "
                + ", ".join(f"{name} under {prefix!r}" for prefix, name in sorted(nets.items()))
                + f"; pick one with --checkpoint-key KEY (checkpoint_key=KEY), KEY one of {choices}"
            )
        if not nets:
            raise ConfigError(
                f"cannot tell the architecture of {p} from its weights ({describe_keys(state_dict)}); "
                f"pass --arch NAME (one of {', '.join(CIFAR_RESNETS)}, torchvision:NAME, or package.module:callable)"
            )
        (arch,) = nets.values()
    classes = num_classes if num_classes is not None else _classes(state_dict, found.extras)
    if classes is None:
        raise ConfigError(f"cannot tell the number of classes of {p} from its weights; pass --num-classes N")
    model = resolve_arch(arch, classes, in_channels)
    fit = fit_keys(state_dict, list(model.state_dict()), key_path=found.key_path, source=str(p))
    if num_classes is None and fit.prefix:
        rows = _classes(fit.state_dict, found.extras)
        if rows is not None and rows != classes:  # the first guess read another network's classifier
            classes = rows
            model = resolve_arch(arch, classes, in_channels)
    pick_hint = bool(found.others or fit.prefix or fit.ignored)
    load_strict(model, fit.state_dict, str(p), arch, stripped=fit.prefix, pick_hint=pick_hint)
    return model, arch, classes, fit_notes(fit, arch)


def _from_module(
    found: Checkpoint, p: Path, kind: str, arch: str | None, num_classes: int | None, in_channels: int
) -> Teacher:
    module = found.module
    assert module is not None
    if arch is not None:
        weights = Checkpoint(module.state_dict(), None, {}, found.key_path, found.others, found.notes)
        model, arch, classes, notes = _fit_weights(weights, p, arch, num_classes, in_channels)
        return _make_teacher(model, canonical_arch(arch), classes, kind, True, found.notes + notes)
    found_rows = classifier_rows(module.state_dict())
    if num_classes is not None and found_rows is not None and num_classes != found_rows:
        raise MismatchError(
            f"{p} classifies into {found_rows} classes but --num-classes is {num_classes}; "
            "drop --num-classes or pass the right file"
        )
    classes = found_rows if found_rows is not None else num_classes
    return _make_teacher(module, module_arch(module, kind), classes, kind, True, found.notes)


def _make_teacher(
    model: nn.Module,
    arch: str,
    num_classes: int | None,
    source_kind: str,
    trusted: bool,
    notes: tuple[str, ...] = (),
) -> Teacher:
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
    tappable = tap_refusal(model) is None
    names = {name for name, _ in model.named_modules()} if tappable else set()
    is_cifar = tappable and infer_cifar_resnet(state_dict) is not None and DEFAULT_LAYER in names
    table = arch_default(arch)
    if table is not None and table.layer in names:
        setattr(model, LAYER_POOLINGS_ATTR, {table.layer: table.pooling})  # what "auto" pooling means there
    else:
        table = None
    return Teacher(
        model=model,
        arch=arch,
        weights_sha256=weights_sha256(state_dict),
        num_params=sum(p.numel() for p in model.parameters()),
        num_classes=num_classes,
        source_kind=source_kind,
        trusted_code=trusted,
        default_layer=table.layer if table else DEFAULT_LAYER if is_cifar else None,
        notes=notes,
        default_pooling=table.pooling if table else None,
        arch_normalize=arch_normalization(arch),
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
    return replace(loaded, arch="resnet8", source_kind="embedded", trusted_code=False)


__all__ = ["SOURCE_KINDS", "Teacher", "load_embedded_teacher", "load_teacher"]
