"""Limiting a build to part of a split: ``--samples START:STOP`` or ``--limit N`` (= ``--samples 0:N``).

The file then holds samples ``START .. STOP - 1`` of the split, in order, and records the range as
``dataset.subset`` (format 1.1), so that :class:`fpkit.FingerprintDataset` pairs it with the whole
split (item i is sample ``START + i``) or with exactly those samples.  A range that covers the
whole split is no subset: the build and its file are those of a plain build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

import numpy as np

from ..datasets import ImageSource
from ..errors import ConfigError, OptionError

_RANGE = re.compile(r"([0-9]*):([0-9]*)", re.ASCII)


def parse_samples(text: str) -> tuple[int, int | None]:
    """``START:STOP`` (either side may be left out: ``:5000``, ``100:``) as (start, stop or None).

    Raises:
        ConfigError: not of that form, or STOP <= START.
    """
    m = _RANGE.fullmatch(text.strip())
    if not m or not (m.group(1) or m.group(2)):
        raise ConfigError(f"--samples must be START:STOP (e.g. 0:5000, :5000 or 100:), got {text!r}")
    start = int(m.group(1) or 0)
    stop = int(m.group(2)) if m.group(2) else None
    if stop is not None and stop <= start:
        raise ConfigError(f"--samples {text}: STOP must be larger than START")
    return start, stop


def check_range_options(samples: str | None, limit: int | None) -> None:
    """The syntax of --samples and --limit, and not both (raises ConfigError)."""
    if samples is not None and limit is not None:
        raise ConfigError("--limit N is short for --samples 0:N; pass only one of them")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"--limit must be an integer >= 1, got {limit!r}")
    if samples is not None:
        parse_samples(samples)


def sample_range(samples: str | None, limit: int | None, size: int, name: str) -> tuple[int, int] | None:
    """The (start, stop) the options select from a split of ``size`` samples named ``name``, or
    None for the whole split.  ``--limit`` takes at most the split; ``--samples`` must fit it.

    Raises:
        OptionError: the range does not fit the split.
    """
    if limit is not None:
        start, stop = 0, min(limit, size)
    elif samples is not None:
        start, stop = parse_samples(samples)
        stop = size if stop is None else stop
        if stop > size or start >= size:
            raise OptionError(
                f"--samples {samples} does not fit {name}, which has {size:,} samples (0:{size}); "
                f"give a range within it, e.g. --samples {min(start, size - 1)}:{size}"
            )
    else:
        return None
    return None if (start, stop) == (0, size) else (start, stop)


@dataclass
class SubsetSource(ImageSource):
    """Samples ``start .. start + len - 1`` of an :class:`ImageSource`, indexed from 0.  Its
    ``torch_dataset()`` is still the whole split (what a student wraps; FingerprintDataset offsets)."""

    start: int = 0
    source_num_samples: int = 0

    def get_batch(self, indices):
        return super().get_batch(np.asarray(indices, dtype=np.int64) + self.start)

    def get_images(self, indices):
        return super().get_images(np.asarray(indices, dtype=np.int64) + self.start)

    @property
    def stop(self) -> int:
        return self.start + len(self)

    def subset_json(self) -> dict:
        """The plan's and the file's record of the range."""
        return {"start": self.start, "stop": self.stop, "source_num_samples": self.source_num_samples}


def take_samples(source: ImageSource, rng: tuple[int, int] | None) -> ImageSource:
    """``source`` itself for None, else a :class:`SubsetSource` of samples ``rng[0]:rng[1]``."""
    if rng is None:
        return source
    start, stop = rng
    values = {f.name: getattr(source, f.name) for f in fields(source)}
    values.update(labels=np.asarray(source.labels)[start:stop], _plain=None)
    return SubsetSource(**values, start=start, source_num_samples=len(source))


def subset_of(source: ImageSource) -> dict | None:
    """The range a source was cut to (``{start, stop, source_num_samples}``), None for a whole split."""
    return source.subset_json() if isinstance(source, SubsetSource) else None


__all__ = ["SubsetSource", "check_range_options", "parse_samples", "sample_range", "subset_of", "take_samples"]
