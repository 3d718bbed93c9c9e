"""Reading and verifying fingerprint files (format v1).

:func:`open_fingerprints` opens read-only without file locks, validates the whole structure
before allocating anything, loads every table into memory, checks each table's SHA-256, and
closes the file before returning (the checks themselves are in :mod:`fpkit.format.checker`).
The resulting :class:`FingerprintFile` holds only numpy arrays and plain data: it pickles, and
DataLoader workers (fork or spawn) can share it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, FpkitError, RedactedError
from . import layout, logits, quantize
from .checker import FileChecker
from .logits import LogitsInfo
from .metadata import LayerRecord, Metadata
from .spec import CLASS_COUNTS, LABELS, SAMPLE_DIGESTS, VIEW_PARAMS


@dataclass(frozen=True)
class LayerInfo:
    """What the file says about one tapped layer."""

    name: str
    index: int
    pooling: str
    d: int
    r: int
    seed: int | None
    generator: str
    projection_sha256: str
    projection_stored: bool
    tables: tuple[str, ...]
    fidelity: dict = field(default_factory=dict, compare=False)

    @classmethod
    def from_record(cls, index: int, rec: LayerRecord) -> LayerInfo:
        """The flat view of entry ``index`` of the metadata's ``layers``."""
        pr = rec.projection
        return cls(
            name=rec.name,
            index=index,
            pooling=rec.pooling,
            d=rec.d,
            r=pr.r,
            seed=pr.seed,
            generator=pr.generator,
            projection_sha256=pr.sha256,
            projection_stored=pr.stored,
            tables=tuple(rec.tables),
            fidelity={k: t.fidelity_min_cos for k, t in rec.tables.items()},
        )


@dataclass(eq=False)
class FingerprintFile:
    """A fingerprint file loaded into memory (no open HDF5 handle).

    ``metadata`` is the typed document (:class:`~fpkit.format.metadata.Metadata`), ``layers`` a
    flat view of its layers, ``arrays`` every loaded dataset by path, as stored.
    """

    path: str
    format_version: str
    metadata: Metadata
    layers: tuple[LayerInfo, ...]
    arrays: dict[str, np.ndarray]
    _decoded: dict = field(default_factory=dict, repr=False)
    logits_info: LogitsInfo | None = None  # format 1.3's logit table (None: the file has none)

    def __eq__(self, other: object) -> bool:
        # the generated __eq__ would compare numpy arrays with ==, which raises ValueError
        if not isinstance(other, FingerprintFile):
            return NotImplemented
        return (
            self.path == other.path
            and self.format_version == other.format_version
            and self.metadata == other.metadata
            and self.layers == other.layers
            and self.arrays.keys() == other.arrays.keys()
            and all(
                a.dtype == other.arrays[k].dtype and np.array_equal(a, other.arrays[k]) for k, a in self.arrays.items()
            )
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass default

    # ---- identity
    @property
    def num_samples(self) -> int:
        return int(self.metadata.dataset.num_samples)

    @property
    def num_classes(self) -> int:
        return int(self.metadata.dataset.num_classes)

    @property
    def classes(self) -> list[str]:
        return list(self.metadata.dataset.classes)

    @property
    def labels(self) -> np.ndarray:
        return self.arrays[LABELS]

    @property
    def sample_digests(self) -> np.ndarray:
        return self.arrays[SAMPLE_DIGESTS]

    @property
    def class_counts(self) -> np.ndarray:
        return self.arrays[CLASS_COUNTS]

    @property
    def view_params(self) -> np.ndarray | None:
        """int16 [N, K, 3] (top, left, flip) of each recorded view, or None without --replay."""
        return self.arrays.get(VIEW_PARAMS)

    @property
    def layer_names(self) -> list[str]:
        return [lay.name for lay in self.layers]

    def layer(self, name: str | None = None) -> LayerInfo:
        """The named layer; ``None`` means the first one stored.

        Raises:
            ConfigError: no layer of that name (the message lists the layers).
        """
        if name is None:
            return self.layers[0]
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise ConfigError(f"layer {name!r} is not in {self.path}; it holds {', '.join(self.layer_names)}")

    def table(self, kind: str = "sample", layer: str | None = None) -> np.ndarray:
        """The float32 table of ``kind`` ("sample" [N, r], "class" [C, r], "views" [N, K, r]).

        Raises:
            ConfigError: the file does not hold that table (the message says how to build it).
        """
        lay = self.layer(layer)
        if kind not in ("sample", "class", "views"):
            raise ConfigError(f"unknown table kind {kind!r}; use 'sample', 'class' or 'views'")
        if kind not in lay.tables:
            hint = {"sample": "--tables sample", "class": "--tables class", "views": "--replay"}[kind]
            raise ConfigError(
                f"{self.path} has no {kind!r} table for layer {lay.name} (it has "
                f"{', '.join(lay.tables)}: ask for one of those, or rebuild with {hint})"
            )
        key = (lay.index, kind)
        if key not in self._decoded:
            info = self.metadata.layers[lay.index].tables[kind]
            scale = self.arrays[info.scale] if info.scale else None
            self._decoded[key] = quantize.decode(self.arrays[info.dataset], scale)
        return self._decoded[key]

    @property
    def logits_kind(self) -> str | None:
        """The kind of the file's logit table (mean, full, topk, sample), or None."""
        return None if self.logits_info is None else self.logits_info.spec.kind

    def logit_targets(self) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The teacher's logit table (format 1.3): float32 [N, C] (mean), float32 [N, K, C] (full),
        (float32 values, int32 indices), each [N, K, k] (topk), or int32 indices [N, K, k] (sample).

        Raises:
            ConfigError: the file holds no logits (rebuild with --logits).
        """
        if self.logits_info is None:
            raise ConfigError(f"{self.path} holds no logits; rebuild it with --logits mean|full|topk:K|sample:K")
        kind = self.logits_info.spec.kind
        paths = {
            "mean": (logits.MEAN,),
            "full": (logits.VIEWS,),
            "topk": (logits.TOPK_VALUES, logits.TOPK_INDICES),
            "sample": (logits.SAMPLE_INDICES,),
        }[kind]
        if paths[0] not in self.arrays:
            raise ConfigError(f"the per-view logits of {self.path} were not loaded; open it with load_views=True")
        out = []
        for path in paths:  # one cached array per dataset, so shared_tables can move each
            arr = self.arrays[path]
            if arr.dtype != np.int32:
                arr = self._decoded.setdefault(("logits", path), arr.astype(np.float32))
            out.append(arr)
        return tuple(out) if len(out) > 1 else out[0]

    def projection(self, layer: str | None = None) -> np.ndarray:
        """The float32 projection R [d, r] of a layer.

        Raises:
            RedactedError: the file was built with --redact and does not hold R.
        """
        lay = self.layer(layer)
        if not lay.projection_stored:
            raise RedactedError(
                f"{self.path} was built redacted: layer {lay.name} has no projection R; "
                "use the relational loss, which needs no R"
            )
        return self.arrays[layout.projection_path(lay.index)]


def open_fingerprints(
    path: str | os.PathLike, *, verify: bool = True, load_views: bool = True, max_bytes: int | None = None
) -> FingerprintFile:
    """Open, validate and load a fingerprint file.

    Args:
        path: the .h5 file.
        verify: recompute every table's SHA-256 and compare with the metadata (cheap: ~30 ms for
            50,000 x 128 float16); HDF5's fletcher32 checks run regardless.
        load_views: also load per-view replay tables ([N, K, r], possibly large).
        max_bytes: refuse files whose tables would need more memory than this.

    Raises:
        FpkitFileNotFoundError, FormatError, UnsupportedVersionError, UnknownFieldError,
        IncompleteFileError, CorruptFileError.
    """
    r = FileChecker(path)
    try:
        r.structure(max_bytes=max_bytes)
        info = logits.check_structure(r)
        r.load(verify=verify, load_views=load_views, problems=None)
        if info is not None and (load_views or not info.spec.per_view):
            r.arrays.update(logits.load(r, info, verify, None))
    finally:
        r.close()
    return FingerprintFile(
        path=str(r.path),
        format_version=r.version,
        metadata=r.meta,
        layers=tuple(LayerInfo.from_record(i, rec) for i, rec in enumerate(r.meta.layers)),
        arrays=r.arrays,
        logits_info=info,
    )


def verify_fingerprints(path: str | os.PathLike) -> list[str]:
    """Check a file completely; return the list of problems (empty when intact).

    Structural problems (not HDF5, unknown version, incomplete, schema) end the check at the first
    one; content problems (checksums, digests) are all collected.
    """
    try:
        r = FileChecker(path)
    except FpkitError as e:
        return [str(e)]
    problems: list[str] = []
    try:
        r.structure(max_bytes=None)
        info = logits.check_structure(r)
        r.load(verify=True, load_views=True, problems=problems)
        if info is not None:
            logits.load(r, info, True, problems)
    except FpkitError as e:
        problems.append(str(e))
    finally:
        r.close()
    return problems
