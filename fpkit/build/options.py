"""What a user asks ``fpkit build`` for: the options, their checks, and warnings about odd ones."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..augment import ViewPolicy
from ..datasets import ImageSource
from ..devices import resolve_device
from ..errors import ConfigError
from ..format.codecs import check_codec
from ..format.logits import LogitsSpec
from ..format.quantize import check_dtype
from ..views import CenterPolicy, Policy, ResizedCropPolicy
from .subset import check_range_options, subset_of

MAX_SEED = 2**63 - 1


@dataclass
class BuildOptions:
    """Everything that decides what ``fpkit build`` does (CLI options map one to one)."""

    teacher: str = "embedded"
    dataset: str | None = None  # None: the embedded sample for the embedded teacher, else an error
    output: str | None = None
    root: str = "data"
    split: str | None = None  # None: the dataset's default (train; test for embedded)
    arch: str | None = None
    num_classes: int | None = None
    layers: Sequence[str] = ()
    r: int = 128
    seed: int | None = None
    views: int | str = 8
    view_seed: int | None = None
    padding: int = 4
    flip: bool = True
    policy: str = "pad-crop"  # pad-crop, resized-crop or center (fpkit.views)
    image_size: int = 224  # resized-crop and center: the views' size
    resize: int | None = None  # center: the shorter side before the crop (None: image_size * 8 / 7)
    scale: tuple[float, float] = (0.08, 1.0)  # resized-crop: the crop's area range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # resized-crop: the crop's aspect ratio range
    replay: bool = False
    logits: str = "none"  # none, mean, full, topk:K, sample:K[:T]: the teacher's logits (format 1.3)
    tables: Sequence[str] = ("sample", "class")
    dtype: str = "float16"
    codec: str = "none"
    device: str = "auto"
    batch_size: int | None = None  # None: by device, see build.job.default_batch_size
    num_workers: int = 0
    autocast: str | None = None
    pooling: str = "auto"
    redact: bool = False
    trust_teacher_code: bool = False
    force: bool = False
    resume: bool = False
    chunk_size: int | None = None  # None: min(1024, ceil(N / 8)), see build.job.auto_chunk_size
    normalize: str | None = None  # None: the checkpoint's recorded statistics, else the dataset's
    download: bool = True
    checkpoint_key: str | None = None  # ENTRY[.PREFIX] of a checkpoint dict (teachers.load_teacher)
    samples: str | None = None  # START:STOP: only these samples of the split (build.subset)
    limit: int | None = None  # N: the first N samples (--samples 0:N)


def check_options(o: BuildOptions) -> None:
    """Reject invalid options before any work starts (raises ConfigError)."""
    if not isinstance(o.r, int) or o.r <= 0:
        raise ConfigError(f"--r must be a positive integer, got {o.r!r}; the source writeup used 128")
    if not (isinstance(o.views, int) and o.views >= 1) and o.views != "all":
        raise ConfigError(f"--views must be a positive integer or 'all', got {o.views!r}")
    for name, value in (("--seed", o.seed), ("--view-seed", o.view_seed)):
        if value is not None and not 0 <= value <= MAX_SEED:
            raise ConfigError(f"{name} must lie in [0, 2**63), got {value}")
    for name, value, least in (
        ("--batch-size", o.batch_size, 1),
        ("--chunk-size", o.chunk_size, 1),
        ("--num-workers", o.num_workers, 0),
    ):
        if value is None and name in ("--chunk-size", "--batch-size"):
            continue
        if not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}")
    if not o.tables or set(o.tables) - {"sample", "class"}:
        raise ConfigError(f"--tables must be a comma list of sample,class; got {','.join(o.tables)}")
    if o.autocast not in (None, "bfloat16", "float16"):
        raise ConfigError(f"--autocast must be bfloat16 or float16, got {o.autocast!r}")
    if o.force and o.resume:
        raise ConfigError("--force starts over and --resume continues; pass only one")
    check_range_options(o.samples, o.limit)
    logits = LogitsSpec.parse(o.logits)
    if logits is not None and logits.per_view and not o.replay:
        raise ConfigError(f"--logits {o.logits} stores every view's logits and needs --replay; add it or use mean")
    check_dtype(o.dtype)
    check_codec(o.codec)
    policy = view_policy(o)
    if o.views == "all" and policy.num_views is None:
        raise ConfigError("--views all has no meaning for --policy resized-crop (no finite views); give --views K")
    resolve_device(o.device, int(os.environ.get("LOCAL_RANK", "0")))


def view_policy(o: BuildOptions) -> Policy:
    """The view policy the options ask for (raises ConfigError naming the bad option)."""
    if o.policy == "pad-crop":
        return ViewPolicy(o.padding, o.flip)
    if o.policy == "resized-crop":
        return ResizedCropPolicy(o.image_size, tuple(o.scale), tuple(o.ratio), o.flip)
    if o.policy == "center":
        return CenterPolicy(o.image_size, o.resize if o.resize is not None else o.image_size * 8 // 7)
    raise ConfigError(f"--policy must be pad-crop, resized-crop or center, got {o.policy!r}")


def check_source_policy(o: BuildOptions, source: ImageSource) -> None:
    """Fit the source to the policy: pad-crop needs images of one size (an image folder's headers
    are read to check it); resized-crop and center take a folder's images at any size."""
    if o.policy != "pad-crop":
        source.allow_varied_sizes()
    elif source.sizes_vary():
        raise ConfigError(
            f"{source.name} holds images of different sizes, which --policy pad-crop cannot crop; "
            f"pass --policy resized-crop --image-size {o.image_size} (or --policy center)"
        )


def option_warnings(o: BuildOptions) -> list[str]:
    """Valid but probably unintended options, as sentences for stderr."""
    out = []
    distinct = view_policy(o).num_views
    if isinstance(o.views, int) and distinct is not None and o.views > distinct and o.policy != "center":
        out.append(
            f"--views {o.views} draws more views than the policy has distinct ones ({distinct}); "
            "--views all averages over each of them exactly once"
        )
    if o.redact and o.seed is not None:
        out.append(
            "--redact leaves R and its seed out, but the file keeps R's SHA-256: anyone who guesses "
            f"--seed {o.seed} recovers R; leave --seed out to draw a secret one"
        )
    if o.r < 8:
        out.append(
            f"--r {o.r} keeps very few dimensions: the cosine loss between {o.r}-d projections says "
            "little (the source writeup used 128)"
        )
    return out


def default_output(o: BuildOptions, source: ImageSource) -> Path:
    """TEACHER-DATASET-SPLIT.h5 in the current folder (TEACHER-DATASET-SPLIT-STARTtoSTOP.h5 for
    part of the split)."""
    teacher = "embedded" if o.teacher == "embedded" else Path(o.teacher).name.split(".")[0]
    data = re.sub(r"[^A-Za-z0-9_-]+", "-", source.name.split(":")[-1].rstrip("/").split("/")[-1]) or "data"
    sub = subset_of(source)
    part = f"-{sub['start']}to{sub['stop']}" if sub else ""
    return Path(f"{teacher}-{data}-{source.split}{part}.h5")
