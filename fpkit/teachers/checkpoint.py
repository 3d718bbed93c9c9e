"""What a loaded checkpoint holds, and fitting its keys to an architecture.

Trainers save the same weights in different layouts.  :func:`split_checkpoint` finds them: a bare
state_dict; a dict with the state_dict under ``model`` (RepDistiller, DeiT), ``state_dict`` (PyTorch
Lightning, timm), ``model_state_dict`` or ``net``; timm's EMA copies under ``state_dict_ema`` /
``model_ema``.  When a file holds both EMA and plain weights the EMA weights are taken, as timm's own
``load_checkpoint`` does by default (they are usually the better model, and the copy timm selects
its best checkpoint by), and a note says so; ``checkpoint_key`` chooses otherwise.

Keys may then carry a prefix: ``module.`` (DataParallel / DistributedDataParallel), ``_orig_mod.``
(``torch.compile``), the attribute a Lightning module keeps the network in (``model.``, ``net.``,
``student.``/``teacher.``), or a nesting of these (``model.module.``).  :func:`fit_keys` strips a
prefix only when the keys under it are exactly the architecture's keys, and :func:`fit_notes` words
what was stripped or ignored, for the user to read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fpkit.errors import ConfigError, FormatError, MismatchError
from fpkit.models import CIFAR_RESNETS, infer_cifar_resnet
from fpkit.teachers.architectures import torchvision_names
from fpkit.teachers.messages import first_line

EMA_ENTRIES = ("state_dict_ema", "model_ema")
PLAIN_ENTRIES = ("model", "state_dict", "model_state_dict", "net")
ENTRY_ORDER = EMA_ENTRIES + PLAIN_ENTRIES
"""Entries searched for weights, first match wins: EMA weights before plain ones, as in timm."""

_CLASSIFIER_WORDS = ("classifier", "head", "fc")
_WRAPPERS = {"module": "DataParallel/DistributedDataParallel", "_orig_mod": "torch.compile"}
_SHOWN = 5  # key names quoted in a message


@dataclass(frozen=True)
class Checkpoint:
    """The weights found in a loaded checkpoint object, and where in it they were found.

    Attributes:
        state_dict: the tensors by name (keys as in the file, less a prefix named by
            ``checkpoint_key``), or None when the weights are a whole module.
        module: a whole ``nn.Module`` (only from a file loaded with trust), or None.
        extras: the checkpoint's top-level dict (``{}`` for a bare state_dict or module).
        key_path: where the weights sit, in ``checkpoint_key`` syntax (``state_dict_ema``,
            ``state_dict.teacher``); ``""`` when the file is the state_dict itself.
        others: other top-level entries that hold different weights.
        notes: human-readable sentences on choices made (which entry was taken), for the user.
    """

    state_dict: dict[str, torch.Tensor] | None
    module: nn.Module | None
    extras: dict
    key_path: str = ""
    others: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class KeyFit:
    """The part of a state_dict that fits an architecture, with the key prefix taken off.

    Attributes:
        state_dict: the tensors under ``prefix``, with ``prefix`` removed from their keys.
        prefix: the stripped prefix, ending in ``.``; ``""`` when no prefix was stripped.
        ignored: keys of the input outside ``prefix`` (not loaded).
        complete: every key the architecture expects is present (the key sets may still differ
            by unexpected extra keys, which strict loading reports).
    """

    state_dict: dict[str, torch.Tensor]
    prefix: str
    ignored: tuple[str, ...]
    complete: bool


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _holds_weights(obj: Any) -> bool:
    return isinstance(obj, nn.Module) or _is_state_dict(obj)


def _same_weights(a: Any, b: Any) -> bool:
    if a is b:
        return True
    if not (_is_state_dict(a) and _is_state_dict(b)) or a.keys() != b.keys():
        return False
    return all(a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def _quote(names: Collection[str], limit: int = _SHOWN) -> str:
    shown = ", ".join(repr(n) for n in list(names)[:limit])
    return shown + (", ..." if len(names) > limit else "")


def join_key(*parts: str) -> str:
    """Parts of a ``checkpoint_key`` (an entry, prefixes with or without their dots) joined by ``.``."""
    return ".".join(p.strip(".") for p in parts if p.strip("."))


def describe_keys(state_dict: Mapping[str, Any]) -> str:
    """A short description of a state_dict's keys by their first name, e.g. ``128 keys, all under 'model.'``."""
    groups = Counter(k.split(".", 1)[0] + ("." if "." in k else "") for k in state_dict)
    if len(groups) == 1:
        ((group, _),) = groups.items()
        if group.endswith("."):
            return f"{len(state_dict)} keys, all under {group!r}"
    top = ", ".join(f"{g!r} ({n})" for g, n in groups.most_common(4))
    return f"{len(state_dict)} keys, beginning {top}{', ...' if len(groups) > 4 else ''}"


def split_checkpoint(obj: Any, path: Path, checkpoint_key: str | None = None) -> Checkpoint:
    """Find the weights in an object loaded from ``path``.

    ``checkpoint_key`` picks them explicitly, as ``ENTRY[.PREFIX]``: the top-level entry of a
    checkpoint dict (the longest entry name that matches), then optionally a key prefix inside it
    whose keys are taken with the prefix removed (``state_dict.teacher`` takes the keys
    ``teacher.*`` of ``ckpt['state_dict']``).  For a bare state_dict or module the whole of
    ``checkpoint_key`` is a prefix (a submodule path for a module).  Without it the first entry of
    :data:`ENTRY_ORDER` holding weights is taken, and a note names any other entry holding
    different weights.

    Returns:
        A :class:`Checkpoint`.

    Raises:
        FormatError: the object holds no weights where they are looked for.
        ConfigError: ``checkpoint_key`` names no entry or prefix of the file, or an entry without weights.
    """
    key = None if checkpoint_key is None else checkpoint_key.strip()
    if key is not None and not key.strip("."):
        raise ConfigError(f"checkpoint_key must name an entry of {path}, got {checkpoint_key!r}")
    if _holds_weights(obj):
        bare = Checkpoint(None, obj, {}) if isinstance(obj, nn.Module) else Checkpoint(dict(obj), None, {})
        return _take_prefix(bare, key or "", path, "the file itself")
    if not isinstance(obj, Mapping):
        raise FormatError(
            f"{path} holds a {type(obj).__name__}, not a state_dict; "
            "re-save it with torch.save(model.state_dict(), path)"
        )
    holding = [k for k, v in obj.items() if isinstance(k, str) and _holds_weights(v)]
    if key is not None:
        names = [k for k in obj if isinstance(k, str) and (key == k or key.startswith(k + "."))]
        if not names:
            where = f"entries holding weights: {_quote(holding)}" if holding else "no entry holds weights"
            raise ConfigError(
                f"{path} has no entry {key.split('.', 1)[0]!r} (checkpoint_key={key!r}); {where}; "
                f"top-level entries: {_quote([str(k) for k in obj], 10)}"
            )
        entry = max(names, key=len)
        if not _holds_weights(obj[entry]):
            raise ConfigError(
                f"entry {entry!r} of {path} holds a {type(obj[entry]).__name__}, not weights "
                f"(checkpoint_key={key!r}); entries holding weights: {_quote(holding) or 'none'}"
            )
        value = obj[entry]
        others = tuple(k for k in holding if k != entry and not _same_weights(obj[k], value))
        found = Checkpoint(*_weights(value), dict(obj), entry, others)
        return _take_prefix(found, key[len(entry) + 1 :], path, f"entry {entry!r}")
    known = [k for k in ENTRY_ORDER if k in holding]
    if not known:
        fix = (
            f"it holds weights under {_quote(holding)}: pass --checkpoint-key {holding[0]} "
            f"(checkpoint_key={holding[0]!r})"
            if holding
            else "re-save it with torch.save(model.state_dict(), path)"
        )
        raise FormatError(
            f"{path} holds a dict with no state_dict under {', '.join(map(repr, ENTRY_ORDER))} "
            f"(top-level keys: {_quote([str(k) for k in obj], 10)}); {fix}"
        )
    entry = known[0]
    others = tuple(k for k in holding if k != entry and not _same_weights(obj[k], obj[entry]))
    rank = {k: i for i, k in enumerate(ENTRY_ORDER)}
    others = tuple(sorted(others, key=lambda k: rank.get(k, len(rank))))
    notes = (_entry_note(entry, others),) if others else ()
    return Checkpoint(*_weights(obj[entry]), dict(obj), entry, others, notes)


def _weights(value: Any) -> tuple[dict[str, torch.Tensor] | None, nn.Module | None]:
    return (None, value) if isinstance(value, nn.Module) else (dict(value), None)


def _entry_note(entry: str, others: tuple[str, ...]) -> str:
    """The note saying which of several entries holding weights was taken, and how to take another."""
    plain = [k for k in others if k in PLAIN_ENTRIES]
    if entry in EMA_ENTRIES and plain:
        return (
            f"the checkpoint holds EMA weights under {entry!r} and plain weights under {plain[0]!r}; "
            f"using the EMA weights {entry!r} (timm's default); pass --checkpoint-key {plain[0]} "
            f"(checkpoint_key={plain[0]!r}) for the plain weights"
        )
    return (
        f"the checkpoint also holds different weights under {_quote(others)}; using {entry!r} "
        f"(the first of {', '.join(ENTRY_ORDER)}); pass --checkpoint-key {others[0]} "
        f"(checkpoint_key={others[0]!r}) for those"
    )


def _take_prefix(found: Checkpoint, rest: str, path: Path, where: str) -> Checkpoint:
    """``found`` narrowed to the keys under the prefix ``rest`` (a submodule path for a module)."""
    rest = rest.strip(".")
    if not rest:
        return found
    key_path = join_key(found.key_path, rest)
    if found.module is not None:
        try:
            module = found.module.get_submodule(rest)
        except AttributeError as e:
            raise ConfigError(
                f"{where} of {path} is a module without a submodule {rest!r} "
                f"(checkpoint_key={key_path!r}): {first_line(e)}"
            ) from e
        return Checkpoint(None, module, found.extras, key_path, found.others, found.notes)
    assert found.state_dict is not None
    prefix = rest + "."
    sub = {k[len(prefix) :]: v for k, v in found.state_dict.items() if k.startswith(prefix)}
    if not sub:
        raise ConfigError(
            f"no key of {where} of {path} starts with {prefix!r} (checkpoint_key={key_path!r}); "
            f"it has {describe_keys(found.state_dict)}"
        )
    return Checkpoint(sub, None, found.extras, key_path, found.others, found.notes)


def under_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state_dict`` whose keys start with ``prefix``, with ``prefix`` removed."""
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


def prefix_counts(keys: Collection[str], expected: Collection[str]) -> Counter[str]:
    """For each dotted prefix P: how many of ``keys`` are P followed by an ``expected`` key.

    ``""`` counts the keys found as they are.  A prefix whose count equals ``len(expected)`` holds
    every expected key.
    """
    wanted = set(expected)
    counts: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in wanted:
                counts[".".join(parts[:i]) + "." if i else ""] += 1
    return counts


def fit_keys(
    state_dict: Mapping[str, torch.Tensor], expected: Collection[str], *, key_path: str = "", source: str = "the file"
) -> KeyFit:
    """Find the key prefix whose keys are the architecture's (``expected``) and take it off.

    A prefix is stripped only when the keys under it include every expected key; of several such
    prefixes the one with exactly the expected keys wins.  When none holds every expected key the
    prefix holding the most is returned with ``complete`` False, for strict loading to report what
    differs.  ``key_path`` is where ``state_dict`` sits in the file (``checkpoint_key`` syntax),
    used to suggest a choice; ``source`` names the file in messages.

    Raises:
        ConfigError: several prefixes hold exactly the expected keys (two networks of this
            architecture, such as a student and a teacher); the message names the choices.
    """
    wanted = set(expected)
    counts = prefix_counts(list(state_dict), wanted)
    full = [p for p, n in counts.items() if n == len(wanted) and wanted]
    exact = [p for p in full if len(under_prefix(state_dict, p)) == len(wanted)]
    if len(exact) > 1:
        choices = [join_key(key_path, p) for p in sorted(exact)]
        raise ConfigError(
            f"{source} holds {len(exact)} networks that fit, under {_quote(sorted(exact))}; pick one with "
            f"--checkpoint-key KEY (checkpoint_key=KEY), KEY one of {', '.join(choices)}"
        )
    if exact:
        prefix, complete = exact[0], True
    elif full:
        prefix, complete = min(full, key=lambda p: (len(under_prefix(state_dict, p)), len(p))), True
    elif counts:
        prefix, complete = max(counts, key=lambda p: (counts[p], -len(p))), False
    else:
        prefix, complete = "", False
    ignored = tuple(k for k in state_dict if not k.startswith(prefix))
    return KeyFit(under_prefix(state_dict, prefix), prefix, ignored, complete)


def fit_notes(fit: KeyFit, arch: str) -> tuple[str, ...]:
    """Sentences telling the user what :func:`fit_keys` stripped and ignored (none if nothing)."""
    if not fit.prefix or not fit.complete:
        return ()
    wrappers = [
        f"{w + '.'!r} is left by {_WRAPPERS[w]}" for w in dict.fromkeys(fit.prefix.split(".")) if w in _WRAPPERS
    ]
    why = f" ({'; '.join(wrappers)})" if wrappers else ""
    notes = [f"stripped the key prefix {fit.prefix!r} from the {len(fit.state_dict)} keys so that they fit {arch}{why}"]
    if fit.ignored:
        keys = "key" if len(fit.ignored) == 1 else "keys"
        notes.append(f"ignored {len(fit.ignored)} {keys} outside {fit.prefix!r}: {_quote(fit.ignored, 3)}")
    return tuple(notes)


def cifar_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, str]:
    """The key prefixes under which ``state_dict`` holds a CIFAR ResNet, each with the net's name.

    ``""`` stands for the keys as they are; other prefixes end in ``.`` (``model.``,
    ``module._orig_mod.``).
    """
    found: dict[str, str] = {}
    for key in state_dict:
        if key != "conv1.weight" and not key.endswith(".conv1.weight"):
            continue
        prefix = key[: -len("conv1.weight")]
        if prefix in found or prefix + "fc.weight" not in state_dict:
            continue
        name = infer_cifar_resnet(under_prefix(state_dict, prefix))
        if name is not None:
            found[prefix] = name
    return found


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


def _common_prefix(keys: list[str]) -> str:
    """The dotted prefix (ending in ``.``) all ``keys`` share, or ``""``."""
    if not keys:
        return ""
    parts = [k.split(".")[:-1] for k in keys]
    shared: list[str] = []
    for names in zip(*parts, strict=False):
        if len(set(names)) != 1:
            break
        shared.append(names[0])
    return ".".join(shared) + "." if shared else ""


def load_strict(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    arch: str,
    *,
    stripped: str = "",
    pick_hint: bool = False,
) -> None:
    """Load ``state_dict`` into ``model``, every key and shape matching.

    ``stripped`` is the prefix already taken off the keys (said in the message), and
    ``pick_hint`` adds the advice to choose other weights of the file with ``--checkpoint-key``.

    Raises:
        MismatchError: keys or shapes differ.  The message gives the counts and first names of the
            missing and unexpected keys, the prefix the unexpected keys share, the CIFAR ResNet the
            weights look like when it is not ``arch``, and the fix.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    looks = infer_cifar_resnet(state_dict)
    hints = []
    if looks is not None and looks != arch:
        hints.append(f"the weights look like {looks}: pass --arch {looks}")
    fix = "check --arch, --num-classes and --in-channels"
    if pick_hint:
        fix += ", or pick other weights in the file with --checkpoint-key ENTRY[.PREFIX]"
    where = f"{source} (keys compared after stripping {stripped!r})" if stripped else source
    if missing or unexpected:
        shared = _common_prefix(unexpected) if len(unexpected) > 1 else ""
        if shared and missing:
            hints.append(f"the unexpected keys all start with {shared!r}")
        raise MismatchError(
            f"{where} does not fit architecture {arch}: {len(missing)} missing keys "
            f"[{_quote(missing)}], {len(unexpected)} unexpected keys [{_quote(unexpected)}]; "
            + "".join(h + "; " for h in hints)
            + fix
        )
    for key, value in expected.items():
        if tuple(value.shape) != tuple(state_dict[key].shape):
            raise MismatchError(
                f"{where} does not fit architecture {arch}: {key} has shape "
                f"{list(state_dict[key].shape)} in the file but {list(value.shape)} in the model; "
                + "".join(h + "; " for h in hints)
                + fix
            )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        raise MismatchError(f"{where} does not fit architecture {arch} ({first_line(e)}); {fix}") from e


__all__ = [
    "ENTRY_ORDER",
    "EMA_ENTRIES",
    "PLAIN_ENTRIES",
    "Checkpoint",
    "KeyFit",
    "arch_from_checkpoint",
    "cifar_prefixes",
    "classifier_rows",
    "describe_keys",
    "fit_keys",
    "fit_notes",
    "join_key",
    "load_strict",
    "prefix_counts",
    "split_checkpoint",
    "under_prefix",
]
