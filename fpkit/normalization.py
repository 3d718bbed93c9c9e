"""Input normalisation: the presets, ``--normalize`` parsing, what a checkpoint records, and which
statistics a build uses.  No torch here, so that the command line can check ``--normalize`` before
importing it.

Which statistics a build uses (:func:`choose_normalization`), first that applies:

1. ``--normalize`` if the user passed it (a warning if the checkpoint records different ones);
2. the statistics the teacher's checkpoint records (:func:`recorded_normalization`);
3. the dataset's own (cifar10, cifar100, fashionmnist, the embedded sample, synthetic);
4. the statistics the teacher's architecture implies (torchvision's classifiers: ImageNet's), said in a note;
5. ImageNet's, with a warning that nothing recorded them (an image folder with a plain state_dict).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from .errors import ConfigError, OptionError

Stats = tuple[tuple[float, ...], tuple[float, ...]]

# Channel statistics of each training split (RepDistiller's constants for CIFAR-100).
NORMALIZE: dict[str, Stats] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "fashionmnist": ((0.2860,), (0.3530,)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
FALLBACK = "imagenet"
"""The preset used when neither the dataset nor the checkpoint says which statistics fit."""


def parse_normalize(spec: str, channels: int | None = None) -> Stats:
    """Parse a preset (cifar10, cifar100, fashionmnist, imagenet, none) or "m1,m2,m3:s1,s2,s3".

    ``channels`` None checks the syntax only (``none`` then gives one channel).

    Raises:
        OptionError: malformed, non-finite, a std <= 0, or a channel count other than ``channels``.
    """
    if spec == "none":
        c = channels or 1
        return (0.0,) * c, (1.0,) * c
    if spec in NORMALIZE:
        mean, std = NORMALIZE[spec]
    else:
        try:
            m, s = spec.split(":")
            mean = tuple(float(x) for x in m.split(","))
            std = tuple(float(x) for x in s.split(","))
        except ValueError as e:
            raise OptionError(
                f"normalisation {spec!r} is neither a preset ({', '.join(NORMALIZE)}, none) nor 'm1,m2,m3:s1,s2,s3'"
            ) from e
    c = channels or len(mean)
    if not _valid(mean, std, c):
        raise OptionError(f"normalisation {spec!r} needs {c} finite means and {c} finite positive stds")
    return tuple(mean), tuple(std)


def _valid(mean: tuple, std: tuple, channels: int) -> bool:
    return len(mean) == channels == len(std) and all(math.isfinite(x) for x in mean + std) and min(std, default=0) > 0


def recorded_normalization(extras: Mapping[str, Any]) -> Stats | None:
    """The normalisation a checkpoint dict records, or None.

    Recognised: ``{'normalize': {'mean': [...], 'std': [...]}}`` (the documented convention) or
    top-level ``'mean'`` and ``'std'`` lists (what ``examples/make_embedded.py`` writes).  Values
    that are not equal-length lists of finite numbers with positive stds are ignored.
    """
    for where in (extras.get("normalize"), extras):
        if not isinstance(where, Mapping):
            continue
        mean, std = where.get("mean"), where.get("std")
        if not isinstance(mean, (list, tuple)) or not isinstance(std, (list, tuple)):
            continue
        try:
            m = tuple(float(x) for x in mean)
            s = tuple(float(x) for x in std)
        except (TypeError, ValueError):
            continue
        if m and _valid(m, s, len(m)):
            return m, s
    return None


def _show(stats: Stats) -> str:
    return f"mean {list(stats[0])}, std {list(stats[1])}"


def choose_normalization(
    user: str | None,
    recorded: Stats | None,
    dataset: Stats | None,
    dataset_name: str,
    channels: int,
    implied: tuple[Stats, str] | None = None,
) -> tuple[Stats, list[str], list[str]]:
    """The statistics a build normalises its views with, and what to tell the user.

    Args:
        user: ``--normalize`` (None if not given).
        recorded: what the teacher's checkpoint records (:func:`recorded_normalization`).
        dataset: the dataset's own statistics, None if it has none (an image folder).
        dataset_name: the dataset, for the messages.
        channels: the images' channel count.
        implied: ``(stats, why)`` the teacher's architecture implies, None if it implies none.

    Returns:
        ``(stats, notes, warnings)``: sentences for the user (notes say which statistics were used).

    Raises:
        OptionError: ``--normalize`` is malformed or does not fit the images.
        ConfigError: the checkpoint's statistics do not fit the images' channels.
    """
    if user is not None:
        stats = parse_normalize(user, channels)
        warnings = []
        if recorded is not None and not _close(stats, recorded):
            warnings.append(
                f"--normalize {user} ({_show(stats)}) differs from the normalisation the teacher's "
                f"checkpoint records ({_show(recorded)}); building with --normalize's, as asked"
            )
        return stats, [f"normalisation: --normalize {user} ({_show(stats)})"], warnings
    if recorded is not None:
        if len(recorded[0]) != channels:
            raise ConfigError(
                f"the teacher's checkpoint records a normalisation of {len(recorded[0])} channels "
                f"({_show(recorded)}) but {dataset_name} has {channels}; pass --normalize"
            )
        return recorded, [f"normalisation: recorded in the teacher's checkpoint ({_show(recorded)})"], []
    if dataset is not None:
        return dataset, [f"normalisation: {dataset_name}'s own statistics ({_show(dataset)})"], []
    if implied is not None and len(implied[0][0]) == channels:
        return implied[0], [f"normalisation: {implied[1]} ({_show(implied[0])})"], []
    stats = NORMALIZE[FALLBACK] if channels == 3 else parse_normalize("none", channels)
    what = "ImageNet's statistics" if channels == 3 else "no normalisation"
    return (
        stats,
        [],
        [
            f"neither {dataset_name} nor the teacher's checkpoint records a normalisation: using {what} "
            f"({_show(stats)}); if the teacher was trained with others, pass --normalize "
            f"(a preset: {', '.join(NORMALIZE)}, or 'm1,m2,m3:s1,s2,s3')"
        ],
    )


def _close(a: Stats, b: Stats) -> bool:
    return len(a[0]) == len(b[0]) and all(abs(x - y) <= 1e-6 for x, y in zip(a[0] + a[1], b[0] + b[1]))
