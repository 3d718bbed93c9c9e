"""Example metadata and small valid fingerprint files, for tests, benchmarks and golden files.

Everything here is deterministic: the same arguments give the same file, byte for byte, on one
HDF5 version.  Metadata helpers return the typed sections of :mod:`fpkit.format.metadata` with
plausible values; pass keyword arguments to change fields (``example_teacher(num_params=5)``)::

    from fpkit.testing import ExampleFile, write_example_file
    data = write_example_file(tmp_path / "fp.h5", ExampleFile(n=20, dtype="int8", replay=2))
    fp = open_fingerprints(data.path)      # data.rows / data.views hold the float32 inputs

For files with rows of your own, build the contents with :func:`example_contents` (or
:class:`~fpkit.format.FileContents` directly) and stream them with :func:`write_rows`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ._version import __version__
from .format import (
    ComputeInfo,
    DatasetInfo,
    FileContents,
    FingerprintWriter,
    LayerSpec,
    Normalization,
    Provenance,
    StorageInfo,
    TeacherInfo,
    ViewsInfo,
)
from .projection import make_projection

#: creation time and library versions of example files (fixed, so files are reproducible)
EXAMPLE_CREATED = "2026-01-01T00:00:00Z"
EXAMPLE_LIBRARIES = {"python": "test", "numpy": "test", "h5py": "test", "hdf5": "test"}


def fixed_provenance(fpkit_version: str = __version__, libraries: Mapping[str, str] | None = None) -> Provenance:
    """Provenance with a fixed creation time (:data:`EXAMPLE_CREATED`) and library versions
    (default :data:`EXAMPLE_LIBRARIES`), so that a file does not depend on when or where it was written."""
    return Provenance(
        fpkit_version=fpkit_version,
        created=EXAMPLE_CREATED,
        libraries=dict(EXAMPLE_LIBRARIES if libraries is None else libraries),
    )


def example_teacher(**changes: Any) -> TeacherInfo:
    """A synthetic CIFAR resnet8 teacher (78,042 parameters, weights digest of zeros, accuracy not
    measured); ``changes`` replace fields, e.g. ``accuracy=Accuracy(0.5, "views", 40)``."""
    return replace(
        TeacherInfo(
            arch="resnet8",
            weights_sha256="0" * 64,
            num_params=78042,
            source_kind="synthetic",
            trusted_code=False,
            accuracy=None,
        ),
        **changes,
    )


def example_dataset(**changes: Any) -> DatasetInfo:
    """A 32x32 RGB training split named "example", normalised with mean 0.5 and std 0.25 per
    channel; ``changes`` replace fields.  The writer fills the sizes and digests."""
    return replace(
        DatasetInfo(
            name="example",
            split="train",
            image_shape=(32, 32, 3),
            normalize=Normalization(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)),
        ),
        **changes,
    )


def example_views(
    per_sample: int = 8, *, replay: bool = False, padding: int = 4, flip: bool = True, seed: int = 0
) -> ViewsInfo:
    """``per_sample`` random pad-crop-flip views (``count = per_sample``) drawn with ``seed``;
    ``replay`` says per-view tables are stored (the file's views_per_sample must then be per_sample)."""
    from .augment import ViewPolicy  # imports torch: only when asked

    return ViewsInfo(
        policy=ViewPolicy(padding=padding, flip=flip).to_dict(),
        count=per_sample,
        per_sample=per_sample,
        seed=seed,
        replay=replay,
    )


def example_policy_views(policy: Any, per_sample: int, *, replay: bool = False, seed: int = 0) -> ViewsInfo:
    """Views of another policy (format 1.2: a :class:`fpkit.views.ResizedCropPolicy` or
    :class:`fpkit.views.CenterPolicy`), ``count = per_sample``, drawn with ``seed``."""
    return ViewsInfo(policy=policy.to_dict(), count=per_sample, per_sample=per_sample, seed=seed, replay=replay)


def example_compute(**changes: Any) -> ComputeInfo:
    """CPU, no autocast, 8 view images per forward, one process; ``changes`` replace fields."""
    return replace(ComputeInfo(device="cpu", autocast=None, batch_size=8, world_size=1), **changes)


def example_layers(
    num_layers: int = 1,
    *,
    d: int = 6,
    r: int = 8,
    seeds: Sequence[int] | None = None,
    redacted: bool | Sequence[bool] = False,
) -> list[LayerSpec]:
    """Layers ``layer1``, ``layer2``, ... with average pooling, width ``d`` and a projection of
    width ``r`` drawn with ``seeds[i]`` (default ``i``); ``redacted`` for all or per layer."""
    seeds = list(range(num_layers)) if seeds is None else list(seeds)
    flags = [redacted] * num_layers if isinstance(redacted, bool) else list(redacted)
    return [
        LayerSpec(f"layer{i + 1}", "avg", d, make_projection(d, r, seeds[i]), seeds[i], redacted=flags[i])
        for i in range(num_layers)
    ]


def example_digests(n: int) -> np.ndarray:
    """Distinct uint64 [n] per-sample digests (multiples of a large odd constant), for files
    whose samples are not real images."""
    return np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15 % 2**63)


def example_rows(n: int, r: int, seed: int, k: int | None = None) -> np.ndarray:
    """float32 Gaussian rows [n, r] (or [n, k, r]) of scale 0.3, so |x| < 2 like real fingerprints."""
    rng = np.random.default_rng(seed)
    shape = (n, k, r) if k else (n, r)
    return rng.standard_normal(shape).astype(np.float32) * np.float32(0.3)


def example_view_params(n: int, k: int, seed: int) -> np.ndarray:
    """int16 [n, k, 3] plausible (top, left, flip) view parameters (padding 4), seeded."""
    vp = np.random.default_rng(seed).integers(0, 9, (n, k, 3)).astype(np.int16)
    vp[..., 2] %= 2
    return vp


def example_contents(
    layers: Sequence[LayerSpec],
    labels: np.ndarray,
    *,
    num_classes: int | None = None,
    views_per_sample: int | None = None,
    storage: StorageInfo | None = None,
    tables: Sequence[str] = ("sample", "class"),
) -> FileContents:
    """The contents of a valid file with the example metadata: classes ``c0``, ``c1``, ...
    (``num_classes``, default max(labels) + 1), :func:`example_digests`, example views that fit
    ``views_per_sample`` (K with replay, else 8 views) and :func:`fixed_provenance`.  Use
    ``dataclasses.replace`` on the result for anything else."""
    labels = np.asarray(labels, dtype=np.int64)
    c = int(labels.max()) + 1 if num_classes is None else num_classes
    k = views_per_sample
    return FileContents(
        layers=list(layers),
        labels=labels,
        sample_digests=example_digests(len(labels)),
        classes=[f"c{i}" for i in range(c)],
        teacher=example_teacher(),
        dataset=example_dataset(),
        views=example_views(k or 8, replay=bool(k)),
        compute=example_compute(),
        tables=tuple(tables),
        views_per_sample=k,
        storage=storage or StorageInfo(),
        provenance=fixed_provenance(),
    )


def write_rows(
    path: str | os.PathLike,
    contents: FileContents,
    rows: Mapping[str, np.ndarray],
    *,
    views: Mapping[str, np.ndarray] | None = None,
    view_params: np.ndarray | None = None,
    batches: int | Sequence[int] = 3,
    overwrite: bool = False,
    version: str | None = None,
) -> Path:
    """Write a file of ``contents`` whose per-sample fingerprints are ``rows`` (layer name ->
    float32 [N, r]), and with replay ``views`` ([N, K, r] per layer) and ``view_params`` [N, K, 3].

    Rows are appended ``batches`` at a time (an int), or in blocks of the given sizes (a
    sequence summing to N).  ``version`` is the format version to write (default: the current
    one).  Returns the path.  Raises what :class:`FingerprintWriter` raises.
    """
    n = len(contents.labels)
    sizes = [batches] * ((n + batches - 1) // batches) if isinstance(batches, int) else list(batches)
    kw = {} if version is None else {"version": version}
    with FingerprintWriter(path, contents, overwrite=overwrite, **kw) as w:
        start = 0
        for b in sizes:
            sl = slice(start, min(n, start + b))
            w.append(
                {name: x[sl] for name, x in rows.items()},
                views=None if views is None else {name: v[sl] for name, v in views.items()},
                view_params=None if view_params is None else view_params[sl],
            )
            start += b
    return Path(path)


def write_logit_file(
    path: str | os.PathLike,
    contents: FileContents,
    rows: Mapping[str, np.ndarray],
    logits: np.ndarray,
    *,
    views: Mapping[str, np.ndarray] | None = None,
    view_params: np.ndarray | None = None,
    batches: int | Sequence[int] = 3,
) -> Path:
    """:func:`write_rows` for a file of format 1.3 with ``contents.logits`` set: ``logits`` is the
    teacher's float32 [N, C] (kind mean) or [N, K, C] table, appended with the rows (replaces
    ``path``)."""
    n = len(contents.labels)
    sizes = [batches] * ((n + batches - 1) // batches) if isinstance(batches, int) else list(batches)
    with FingerprintWriter(path, contents, overwrite=True) as w:
        start = 0
        for b in sizes:
            sl = slice(start, min(n, start + b))
            w.append(
                {name: x[sl] for name, x in rows.items()},
                views=None if views is None else {name: v[sl] for name, v in views.items()},
                view_params=None if view_params is None else view_params[sl],
                logits=logits[sl],
            )
            start += b
    return Path(path)


@dataclass(frozen=True)
class ExampleFile:
    """What :func:`write_example_file` writes: ``n`` samples of ``classes`` classes, ``layers``
    layers of width ``d`` projected to ``r``, the ``tables`` kept, ``replay`` = K per-view
    tables (None: none), ``redact`` for all or per layer, the storage, the append size and
    the seed of the random rows and labels."""

    n: int = 10
    classes: int = 3
    d: int = 6
    r: int = 8
    layers: int = 1
    tables: tuple[str, ...] = ("sample", "class")
    replay: int | None = None
    redact: bool | tuple[bool, ...] = False
    dtype: str = "float16"
    codec: str = "none"
    chunk_rows: int = 4
    batch: int = 3
    seed: int = 0


@dataclass(frozen=True, eq=False)
class ExampleData:
    """A written example file and the exact inputs it holds (float32, before storage encoding)."""

    path: Path
    contents: FileContents
    rows: dict[str, np.ndarray]
    views: dict[str, np.ndarray] | None
    view_params: np.ndarray | None

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.contents.labels)


def write_example_file(
    path: str | os.PathLike,
    spec: ExampleFile = ExampleFile(),
    *,  # noqa: B008 (frozen)
    labels: np.ndarray | None = None,
    rows: Mapping[str, np.ndarray] | None = None,
    views: Mapping[str, np.ndarray] | None = None,
    overwrite: bool = False,
) -> ExampleData:
    """Write a small valid file as ``spec`` says, with Gaussian rows (:func:`example_rows`, seed
    ``spec.seed + i`` for layer i), random labels (seed ``spec.seed + 100``) and, with replay,
    per-sample rows that are the mean of the views.  ``labels``, ``rows`` and ``views`` replace
    the generated ones.  Raises what :class:`FingerprintWriter` raises."""
    s, k = spec, spec.replay
    layers = example_layers(s.layers, d=s.d, r=s.r, redacted=s.redact)
    if labels is None:
        labels = np.random.default_rng(s.seed + 100).integers(0, s.classes, s.n)
    labels = np.asarray(labels, dtype=np.int64)
    if views is None and k:
        views = {sp.name: example_rows(s.n, s.r, s.seed + i, k) for i, sp in enumerate(layers)}
    if rows is None:
        rows = (
            {name: v.mean(axis=1).astype(np.float32) for name, v in views.items()}
            if k
            else {sp.name: example_rows(s.n, s.r, s.seed + i) for i, sp in enumerate(layers)}
        )
    vp = example_view_params(s.n, k, s.seed + 7) if k else None
    contents = example_contents(
        layers,
        labels,
        num_classes=s.classes,
        views_per_sample=k,
        tables=s.tables,
        storage=StorageInfo(dtype=s.dtype, codec=s.codec, chunk_rows=s.chunk_rows),
    )
    out = write_rows(
        path, contents, rows, views=views if k else None, view_params=vp, batches=s.batch, overwrite=overwrite
    )
    return ExampleData(path=out, contents=contents, rows=dict(rows), views=dict(views) if k else None, view_params=vp)


__all__ = [
    "EXAMPLE_CREATED",
    "EXAMPLE_LIBRARIES",
    "ExampleData",
    "ExampleFile",
    "example_compute",
    "example_contents",
    "example_dataset",
    "example_digests",
    "example_layers",
    "example_rows",
    "example_teacher",
    "example_view_params",
    "example_views",
    "fixed_provenance",
    "write_example_file",
    "write_logit_file",
    "write_rows",
]
