"""Streaming, atomic writer of fingerprint files (format v1).

Rows arrive in sample order, batch by batch; memory is one chunk per table plus the per-class
sums (C x r float64), independent of N.  Everything is written to a hidden temporary file in the
output folder; only :meth:`FingerprintWriter.close` sets the completion marker and renames it to
the final name (``os.replace``, then fsync of the folder).  An exception inside the ``with``
block, or :meth:`abort`, deletes the temporary file.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import h5py
import numpy as np

from ..errors import (
    ConfigError,
    FormatError,
    FpkitFileNotFoundError,
    FpkitPermissionError,
    MismatchError,
    NonFiniteError,
    OutputExistsError,
    StorageError,
)
from . import checks, codecs, describe, layout, quantize
from ._stream import StreamedTable, fsync_dir, fsync_file, storage_error
from ._validate import SchemaViolation, validate
from .contents import FileContents, check_contents
from .digests import labels_sha256, order_sha256, projection_sha256
from .logits import LogitStreams, check_spec
from .metadata import (
    LayerRecord,
    Metadata,
    ProjectionRecord,
    Provenance,
    TableRecord,
)
from .spec import (
    ATTR_COMPLETE,
    ATTR_DESCRIPTION,
    ATTR_FORMAT,
    ATTR_METADATA,
    ATTR_VERSION,
    CLASS_COUNTS,
    FORMAT_NAME,
    FORMAT_VERSION,
    LABELS,
    PROJECTION_COLUMN_NORM,
    PROJECTION_GENERATOR,
    README,
    SAMPLE_DIGESTS,
    VIEW_PARAMS,
    WRITABLE_VERSIONS,
)

__all__ = ["FingerprintWriter", "check_output_folder", "output_exists_error"]


def check_output_folder(path: Path) -> None:
    """Refuse an output ``path`` whose folder is missing or not writable.

    Raises:
        FpkitFileNotFoundError: the folder does not exist.  FpkitPermissionError: it is not writable.
    """
    folder = path.parent
    if not folder.is_dir():
        raise FpkitFileNotFoundError(f"output folder {folder} does not exist; create it or choose another -o path")
    if not os.access(folder, os.W_OK):
        raise FpkitPermissionError(f"output folder {folder} is not writable; choose another -o path")


def output_exists_error(path: Path) -> OutputExistsError:
    """The error for an existing output that the caller was not asked to replace."""
    return OutputExistsError(f"{path} exists; pass --force to replace it or choose another -o path")


class FingerprintWriter:
    """Write one fingerprint file, streaming rows in sample order.

    Args:
        path: final file name (the folder must exist and be writable).
        contents: the layers, labels, digests, class names and metadata sections
            (:class:`~fpkit.format.FileContents`).
        overwrite: replace an existing file at ``path``.
        version: the format version to write; None (default): the lowest that describes the file,
            1.1 (with the ``README`` dataset and the ``description`` attributes of SPEC section 4a)
            or 1.2 for the view policies 1.2 adds; "1.0" writes without them, and without
            ``dataset.subset`` (for the golden files of 1.0).

    Raises:
        ConfigError, OutputExistsError, FpkitFileNotFoundError, FpkitPermissionError, StorageError.
    """

    def __init__(
        self, path: str | os.PathLike, contents: FileContents, *, overwrite: bool = False, version: str | None = None
    ):
        self._vp_policy = str(contents.views.policy.get("name"))
        version = version or layout.lowest_version(self._vp_policy, logits=contents.logits is not None)
        if version not in WRITABLE_VERSIONS:
            raise ConfigError(
                f"format version {version!r} cannot be written; use one of {', '.join(WRITABLE_VERSIONS)}"
            )
        if version == "1.0" and contents.dataset.subset is not None:
            raise ConfigError("dataset.subset needs format 1.1; write the current version or leave the subset out")
        need = layout.POLICY_VERSION.get(self._vp_policy, FORMAT_VERSION)
        if layout.version_tuple(version) < layout.version_tuple(need):
            raise ConfigError(f"view policy {self._vp_policy} needs format {need}; leave version= out to write it")
        check_spec(contents.logits, len(contents.classes), contents.views_per_sample, version)
        self.version = version
        st = contents.storage
        quantize.check_dtype(st.dtype)
        codecs.check_codec(st.codec)
        self.path = Path(path)
        check_contents(contents)
        self._check_output(overwrite)
        self.contents = contents
        self.layers = list(contents.layers)
        self.labels = np.asarray(contents.labels, dtype=np.int64)
        self.n = int(self.labels.shape[0])
        self.c = len(contents.classes)
        self.dtype, self.codec, self.chunk_rows = st.dtype, st.codec, int(st.chunk_rows)
        self.tables = tuple(t for t in ("sample", "class") if t in contents.tables)
        self.k = contents.views_per_sample
        self._done = 0
        self._closed = False
        self._class_sum = [np.zeros((self.c, sp.r), dtype=np.float64) for sp in self.layers]
        self._fidelity: dict[tuple[int, str], float] = {}
        digests = np.asarray(contents.sample_digests, dtype=np.uint64)
        self._meta = self._metadata(contents, digests)
        self._tmp = self.path.parent / f".{self.path.name}.writing-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self._f = h5py.File(self._tmp, "w", track_order=False)
            # identify the file from the start, so that an interrupted write reads as incomplete
            self._f.attrs[ATTR_FORMAT] = FORMAT_NAME
            self._f.attrs[ATTR_VERSION] = version
            self._create(digests)
            self._check_metadata()
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise storage_error(e, self.path) from e
            raise

    # ---------------------------------------------------------------- setup
    def _check_output(self, overwrite: bool) -> None:
        check_output_folder(self.path)
        if self.path.is_dir():
            raise ConfigError(f"output {self.path} is a folder; give a file name such as {self.path / 'fp.h5'}")
        if self.path.exists() and not overwrite:
            raise output_exists_error(self.path)

    def _metadata(self, contents: FileContents, digests: np.ndarray) -> Metadata:
        """The document as far as it is known before any row: no layers and no datasets yet."""
        dataset = replace(
            contents.dataset,
            num_samples=self.n,
            num_classes=self.c,
            classes=tuple(contents.classes),
            labels_sha256=labels_sha256(self.labels),
            order_sha256=order_sha256(digests),
        )
        try:
            return Metadata(
                provenance=contents.provenance or Provenance.now(),
                teacher=contents.teacher,
                dataset=dataset,
                views=contents.views,
                compute=contents.compute,
                storage=replace(contents.storage, chunk_rows=self.chunk_rows),
                layers=(),
                datasets={},
                extras=dict(contents.extra or {}),
            )
        except ValueError as e:  # an extension field that shadows a field of the format
            raise ConfigError(f"metadata {e}") from e

    def _check_metadata(self) -> None:
        """Refuse, before any row is computed, metadata that would make a file no reader accepts."""
        try:
            validate(self._meta.to_json())
        except SchemaViolation as e:
            raise ConfigError(f"metadata {e}; it would not follow format {self.version} (formats/SPEC.md)") from e
        if problem := checks.metadata_problem(self._meta):  # the errata's rules (layers come later)
            raise ConfigError(f"metadata: {problem}; it would not follow format {self.version} (formats/SPEC.md)")
        v = self._meta.views
        if bool(v.replay) != bool(self.k) or (self.k and v.per_sample != self.k):
            raise ConfigError(
                f"views.replay={v.replay} and views.per_sample={v.per_sample} do not fit "
                f"views_per_sample={self.k}: replay must be true exactly when per-view tables "
                "are stored, and per_sample must then equal views_per_sample"
            )

    def _create(self, sample_digests: np.ndarray) -> None:
        """Create every dataset of the layout, in its order, writing those known up front."""
        fs = layout.FileShape(n=self.n, c=self.c, k=self.k, dtype=self.dtype, policy=self._vp_policy)
        self._counts = np.bincount(self.labels, minlength=self.c).astype(np.int64)
        known = {LABELS: self.labels, SAMPLE_DIGESTS: sample_digests, CLASS_COUNTS: self._counts}
        datasets = layout.fixed_datasets(fs)
        kinds = self.tables + (("views",) if self.k else ())
        records = []
        for i, sp in enumerate(self.layers):
            datasets += layout.layer_datasets(i, sp.d, sp.r, not sp.redacted, kinds, fs)
            if not sp.redacted:
                known[layout.projection_path(i)] = sp.R.astype(np.float32)
            records.append(
                LayerRecord(
                    name=sp.name,
                    pooling=sp.pooling,
                    d=int(sp.d),
                    group=layout.layer_group(i),
                    projection=ProjectionRecord(
                        r=sp.r,
                        seed=None if sp.redacted else int(sp.seed),
                        generator=PROJECTION_GENERATOR,
                        column_norm=PROJECTION_COLUMN_NORM,
                        sha256=projection_sha256(sp.R),
                        stored=not sp.redacted,
                    ),
                    tables={
                        kind: TableRecord(
                            dataset=layout.table_path(i, kind),
                            scale=layout.scale_path(i, kind, self.dtype),
                            fidelity_min_cos=1.0,
                        )
                        for kind in kinds
                    },
                )
            )
        self._meta = replace(self._meta, layers=tuple(records))
        self._t: dict[str, StreamedTable] = {}
        for ds in datasets:
            group, _, name = ds.path.rpartition("/")
            g = self._f.require_group(group) if group else self._f
            rows = ds.chunk_rows(self.chunk_rows, self.k)
            t = StreamedTable(codecs.create_table(g, name, ds.shape, ds.dtype, self.codec, rows), self.codec)
            self._t[ds.path] = t
            if ds.path in known:
                t.append(known[ds.path])
        if self.version != "1.0":
            self._describe(datasets)
        spec, shape = self.contents.logits, (self.n, self.c, self.k)
        self._logits = LogitStreams(self._f, spec, shape, self.codec, self.chunk_rows) if spec else None

    def _describe(self, datasets: list[layout.DatasetLayout]) -> None:
        """Format 1.1's informative texts (SPEC section 4a): the root ``README`` dataset, marked
        must_understand = false, and the attributes of the layer groups and datasets."""
        readme = self._f.create_dataset(
            README, data=describe.readme(self.version), dtype=h5py.string_dtype(), track_times=False
        )
        readme.attrs["must_understand"] = False
        owner = {layout.layer_group(i): sp for i, sp in enumerate(self.layers)}
        for group, sp in owner.items():
            g = self._f[group]
            g.attrs.update(name=sp.name, pooling=sp.pooling, d=np.int64(sp.d), r=np.int64(sp.r))
            g.attrs[ATTR_DESCRIPTION] = describe.layer_description(sp.name, sp.pooling, sp.d, sp.r)
        self._f[layout.LAYERS_GROUP].attrs[ATTR_DESCRIPTION] = "one group per tapped layer: layers/<i> is layer i"
        k = self.contents.views.per_sample
        for ds in datasets:
            sp = owner.get(ds.path.rpartition("/")[0])
            text = describe.dataset_description(ds, None if sp is None else sp.name, k)
            self._f[ds.path].attrs[ATTR_DESCRIPTION] = text

    # ---------------------------------------------------------------- streaming
    @property
    def rows_written(self) -> int:
        return self._done

    def append(
        self,
        rows: Mapping[str, np.ndarray],
        views: Mapping[str, np.ndarray] | None = None,
        view_params: np.ndarray | None = None,
        logits: np.ndarray | Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Append the next B samples' fingerprints (and logits, format 1.3).

        Args:
            rows: layer name -> float32 [B, r] per-sample fingerprints.
            views: layer name -> float32 [B, K, r] per-view fingerprints (only with views_per_sample).
            view_params: int [B, K, 3] (top, left, flip) of each view (only with views_per_sample).
            logits: float32 [B, C] (kind mean) or [B, K, C] of the teacher (only with contents.logits);
                for topk and sample also the stored tables themselves (path -> [B, K, k] array).
        Raises:
            MismatchError: shapes disagree, or more rows than N.  StorageError: the disk failed.
            NonFiniteError: a value is NaN or infinite, or beyond float16's range when storing float16.
        """
        if self._closed:
            raise ConfigError("writer is closed")
        b = None
        for sp in self.layers:
            if sp.name not in rows:
                raise MismatchError(f"no rows given for layer {sp.name}")
            arr = np.asarray(rows[sp.name], dtype=np.float32)
            if arr.ndim != 2 or arr.shape[1] != sp.r or (b is not None and arr.shape[0] != b):
                raise MismatchError(f"layer {sp.name}: rows must be [B, {sp.r}], got {list(arr.shape)}")
            b = arr.shape[0]
        assert b is not None
        if self._done + b > self.n:
            raise MismatchError(f"{self._done + b} rows appended to a file of {self.n} samples")
        if self.k and (views is None or view_params is None):
            raise MismatchError("this file stores per-view tables: pass views= and view_params=")
        for sp in self.layers:  # before anything is stored, so a refusal leaves the writer usable
            self._check_finite(sp.name, rows[sp.name])
            if self.k and sp.name in views:
                self._check_finite(sp.name, views[sp.name])
        z = self._logits.check(logits, b) if self._logits else None
        labels = self.labels[self._done : self._done + b]
        try:
            if self.k:
                vp = np.asarray(view_params)
                fields, vp_dtype = layout.view_params_fields(self._vp_policy)
                if vp.shape != (b, self.k, len(fields)):
                    raise MismatchError(f"view_params must be [{b}, {self.k}, {len(fields)}], got {list(vp.shape)}")
                self._t[VIEW_PARAMS].append(vp.astype(vp_dtype))
            for i, sp in enumerate(self.layers):
                arr = np.asarray(rows[sp.name], dtype=np.float32)
                np.add.at(self._class_sum[i], labels, arr.astype(np.float64))
                if "sample" in self.tables:
                    self._store(i, "sample", arr)
                if self.k:
                    v = np.asarray(views[sp.name], dtype=np.float32)
                    if v.shape != (b, self.k, sp.r):
                        raise MismatchError(
                            f"layer {sp.name}: views must be [{b}, {self.k}, {sp.r}], got {list(v.shape)}"
                        )
                    self._store(i, "views", v)
            if z is not None:
                self._logits.append(z)
        except OSError as e:
            raise storage_error(e, self.path) from e
        self._done += b

    def _check_finite(self, name: str, values: np.ndarray) -> None:
        """Refuse NaN/inf, and values float16 storage would turn into inf (|x| > 65504)."""
        arr = np.asarray(values, dtype=np.float32)
        finite = np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1)
        ok = finite
        if self.dtype == "float16":  # |x| >= 65520 rounds to inf in float16
            ok = finite & (np.abs(arr) < 65520).reshape(arr.shape[0], -1).all(axis=1)
        if not ok.all():
            bad = (np.flatnonzero(~ok) + self._done).tolist()
            hint = "; they exceed float16's range (|x| <= 65504): store float32" if finite.all() else ""
            raise NonFiniteError(f"layer {name}: non-finite fingerprint values at samples {bad[:10]}{hint}")

    def _store(self, i: int, kind: str, values: np.ndarray) -> None:
        stored, scale = quantize.encode(values, self.dtype)
        self._t[layout.table_path(i, kind)].append(stored)
        if scale is not None:
            self._t[layout.scale_path(i, kind, self.dtype)].append(scale)
        cos = quantize.min_row_cosine(quantize.decode(stored, scale), values)
        key = (i, kind)
        self._fidelity[key] = min(self._fidelity.get(key, 1.0), cos)

    # ---------------------------------------------------------------- finishing
    def close(self) -> Path:
        """Finish the file: per-class table, digests, metadata, completion marker, atomic rename.

        Returns the final path.  Raises MismatchError if fewer than N rows were appended.
        """
        if self._closed:
            return self.path
        try:
            if self._done != self.n:
                raise MismatchError(f"only {self._done} of {self.n} rows were appended; the file is not finished")
            if "class" in self.tables:
                for i, _sp in enumerate(self.layers):
                    safe = np.maximum(self._counts, 1)[:, None]
                    means = (self._class_sum[i] / safe).astype(np.float32)
                    self._store(i, "class", means)
            datasets = {path: t.finish() for path, t in sorted(self._t.items())}
            layers = tuple(
                replace(
                    lay,
                    tables={
                        kind: replace(info, fidelity_min_cos=round(self._fidelity.get((i, kind), 1.0), 9))
                        for kind, info in lay.tables.items()
                    },
                )
                for i, lay in enumerate(self._meta.layers)
            )
            extras = {**self._meta.extras, **({"logits": self._logits.finish()} if self._logits else {})}
            self._meta = replace(self._meta, layers=layers, datasets=datasets, extras=extras)
            try:
                text = json.dumps(self._meta.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False)
            except ValueError as e:
                raise FormatError(
                    f"the metadata of {self.path} holds a NaN or infinite number, which JSON "
                    "cannot carry; check the values given to the writer (normalisation, "
                    "accuracy)"
                ) from e
            f = self._f
            f.attrs[ATTR_METADATA] = text
            f.attrs[ATTR_COMPLETE] = hashlib.sha256(text.encode()).hexdigest()
            f.close()
            fsync_file(self._tmp)
            os.replace(self._tmp, self.path)
            fsync_dir(self.path.parent)
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError) and not isinstance(e, StorageError):
                raise storage_error(e, self.path) from e
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Discard the temporary file; the final name is never touched."""
        self._closed = True
        try:
            f = getattr(self, "_f", None)
            if f is not None and f.id.valid:
                f.close()
        except Exception:
            pass
        try:
            os.unlink(self._tmp)
        except (FileNotFoundError, AttributeError):
            pass

    def __enter__(self) -> FingerprintWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
