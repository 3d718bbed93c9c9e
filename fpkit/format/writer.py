"""Streaming, atomic writer of fingerprint files (format v1).

Rows arrive in sample order, batch by batch; memory is one chunk per table plus the per-class
sums (C x r float64), independent of N.  Everything is written to a hidden temporary file in the
output folder; only :meth:`FingerprintWriter.close` sets the completion marker and renames it to
the final name (``os.replace``, then fsync of the folder).  An exception inside the ``with``
block, or :meth:`abort`, deletes the temporary file.
"""

from __future__ import annotations

import datetime as _dt
import errno
import hashlib
import json
import os
import platform
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from .._version import __version__
from ..projection import GENERATOR, projection_sha256
from ..errors import (ConfigError, FormatError, FpkitFileNotFoundError, FpkitPermissionError, MismatchError,
                      NonFiniteError, OutputExistsError, StorageError)
from . import codecs, quantize
from ._validate import SchemaViolation, validate
from .spec import (ATTR_COMPLETE, ATTR_FORMAT, ATTR_METADATA, ATTR_VERSION, CLASS_COUNTS,
                   DEFAULT_CHUNK_ROWS, DEFAULT_CODEC, DEFAULT_DTYPE, FORMAT_NAME, FORMAT_VERSION,
                   LABELS, SAMPLE_DIGESTS, VIEW_PARAMS)


@dataclass(frozen=True)
class LayerSpec:
    """One tapped layer: its module name, pooling rule, feature dimension d and projection.

    ``R`` is the float32 [d, r] projection; ``redacted=True`` leaves R and its seed out of the file
    (the digest of R is still recorded).
    """

    name: str
    pooling: str
    d: int
    R: np.ndarray
    seed: int
    redacted: bool = False

    @property
    def r(self) -> int:
        return int(self.R.shape[1])


def library_versions() -> dict[str, str]:
    """Versions of the libraries that influence a file's content, for provenance."""
    import torch
    import torchvision
    return {"python": platform.python_version(), "numpy": np.__version__, "h5py": h5py.__version__,
            "hdf5": h5py.version.hdf5_version, "torch": torch.__version__,
            "torchvision": torchvision.__version__}


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def labels_sha256(labels: np.ndarray) -> str:
    """SHA-256 of the label vector as little-endian int64."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


def order_sha256(sample_digests: np.ndarray) -> str:
    """SHA-256 of the per-sample digests (little-endian uint64) in sample order."""
    return hashlib.sha256(np.ascontiguousarray(sample_digests, dtype="<u8").tobytes()).hexdigest()


def sample_digest(pixels: np.ndarray) -> int:
    """Per-sample digest: the first 8 bytes (little-endian uint64) of SHA-256 of the image's
    uint8 pixels in H x W x C order (C omitted for one-channel images stored as H x W)."""
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    return int.from_bytes(hashlib.sha256(arr.tobytes()).digest()[:8], "little")


class _Table:
    """One HDF5 dataset being streamed: a chunk buffer, a running SHA-256 and the row count."""

    def __init__(self, dset: h5py.Dataset, codec: str):
        self.dset, self.codec = dset, codec
        self.rows = dset.chunks[0]
        self.buf = np.zeros(dset.chunks, dtype=dset.dtype)
        self.fill = 0
        self.written = 0
        self.sha = hashlib.sha256()

    def append(self, data: np.ndarray) -> None:
        data = np.asarray(data, dtype=self.dset.dtype)
        self.sha.update(np.ascontiguousarray(data).tobytes())
        pos = 0
        while pos < data.shape[0]:
            take = min(self.rows - self.fill, data.shape[0] - pos)
            self.buf[self.fill:self.fill + take] = data[pos:pos + take]
            self.fill += take
            pos += take
            if self.fill == self.rows:
                self._flush()

    def _flush(self) -> None:
        if self.fill:
            codecs.write_chunk(self.dset, self.codec, self.written, self.buf[: self.fill])
            self.written += self.fill
            self.fill = 0

    def finish(self) -> dict:
        self._flush()
        if self.written != self.dset.shape[0]:
            raise MismatchError(f"table {self.dset.name} got {self.written} rows, expected {self.dset.shape[0]}")
        return {"dtype": str(self.dset.dtype), "shape": list(self.dset.shape), "sha256": self.sha.hexdigest()}


class FingerprintWriter:
    """Write one fingerprint file, streaming rows in sample order.

    Args:
        path: final file name (the folder must exist and be writable).
        layers: the tapped layers, in the order they are stored.
        labels: int [N] class index of every sample, in file order.
        sample_digests: uint64 [N] per-sample digests (:func:`sample_digest`).
        classes: the C class names.
        teacher, dataset, views, compute: metadata sections (formats/SPEC.md); the writer fills
            ``dataset.num_samples/num_classes/classes/labels_sha256/order_sha256`` itself.
        tables: which of "sample", "class" to store (at least one).
        views_per_sample: K, to store per-view tables [N, K, r] and ``view_params`` (replay).
        dtype, codec, chunk_rows: storage options.
        overwrite: replace an existing file at ``path``.
        created, libraries: provenance overrides (golden files use fixed values).

    Raises:
        ConfigError, OutputExistsError, FpkitFileNotFoundError, FpkitPermissionError, StorageError.
    """

    def __init__(self, path: str | os.PathLike, *, layers: Sequence[LayerSpec], labels: np.ndarray,
                 sample_digests: np.ndarray, classes: Sequence[str], teacher: Mapping[str, Any],
                 dataset: Mapping[str, Any], views: Mapping[str, Any], compute: Mapping[str, Any],
                 tables: Sequence[str] = ("sample", "class"), views_per_sample: int | None = None,
                 dtype: str = DEFAULT_DTYPE, codec: str = DEFAULT_CODEC,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS, overwrite: bool = False,
                 created: str | None = None, libraries: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None):
        quantize.check_dtype(dtype)
        codecs.check_codec(codec)
        self.path = Path(path)
        self._check_inputs(layers, labels, sample_digests, classes, tables, chunk_rows)
        self._check_output(overwrite)
        self.layers = list(layers)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.n = int(self.labels.shape[0])
        self.c = len(classes)
        self.dtype, self.codec, self.chunk_rows = dtype, codec, int(chunk_rows)
        self.tables = tuple(t for t in ("sample", "class") if t in tables)
        self.k = views_per_sample
        self._done = 0
        self._closed = False
        self._class_sum = [np.zeros((self.c, sp.r), dtype=np.float64) for sp in self.layers]
        self._fidelity: dict[tuple[int, str], float] = {}
        self._meta = {
            "fpkit_version": __version__,
            "created": created or utc_now(),
            "libraries": dict(libraries) if libraries is not None else library_versions(),
            "teacher": dict(teacher),
            "dataset": {**dict(dataset), "num_samples": self.n, "num_classes": self.c,
                        "classes": list(classes), "labels_sha256": labels_sha256(self.labels),
                        "order_sha256": order_sha256(np.asarray(sample_digests, dtype=np.uint64))},
            "views": dict(views),
            "compute": dict(compute),
            "storage": {"dtype": dtype, "codec": codec, "chunk_rows": self.chunk_rows},
            **(dict(extra) if extra else {}),
        }
        self._tmp = self.path.parent / f".{self.path.name}.writing-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self._f = h5py.File(self._tmp, "w", track_order=False)
            # identify the file from the start, so that an interrupted write reads as incomplete
            self._f.attrs[ATTR_FORMAT] = FORMAT_NAME
            self._f.attrs[ATTR_VERSION] = FORMAT_VERSION
            self._create(np.asarray(sample_digests, dtype=np.uint64))
            self._check_metadata()
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):
                raise _os_error(e, self.path) from e
            raise

    # ---------------------------------------------------------------- setup
    def _check_inputs(self, layers, labels, sample_digests, classes, tables, chunk_rows) -> None:
        if not layers:
            raise ConfigError("at least one layer is needed")
        names = [sp.name for sp in layers]
        if len(set(names)) != len(names):
            raise ConfigError(f"layer names must be unique, got {names}")
        for sp in layers:
            if sp.R.ndim != 2 or sp.R.shape[0] != sp.d or sp.R.shape[1] < 1:
                raise ConfigError(f"layer {sp.name}: projection must have shape [d={sp.d}, r], got {list(sp.R.shape)}")
        n = len(labels)
        if n < 1:
            raise ConfigError("a fingerprint file needs at least one sample")
        if len(sample_digests) != n:
            raise MismatchError(f"{len(sample_digests)} sample digests for {n} labels")
        lab = np.asarray(labels)
        if lab.min() < 0 or lab.max() >= len(classes):
            raise ConfigError(f"labels must lie in [0, {len(classes)}), got range [{lab.min()}, {lab.max()}]")
        if not set(tables) & {"sample", "class"} or set(tables) - {"sample", "class"}:
            raise ConfigError(f"tables must be a non-empty subset of sample,class; got {','.join(tables)}")
        if chunk_rows < 1:
            raise ConfigError(f"chunk_rows must be >= 1, got {chunk_rows}")

    def _check_output(self, overwrite: bool) -> None:
        folder = self.path.parent
        if not folder.is_dir():
            raise FpkitFileNotFoundError(f"output folder {folder} does not exist; create it or choose another -o path")
        if not os.access(folder, os.W_OK):
            raise FpkitPermissionError(f"output folder {folder} is not writable; choose another -o path")
        if self.path.is_dir():
            raise ConfigError(f"output {self.path} is a folder; give a file name such as {self.path / 'fp.h5'}")
        if self.path.exists() and not overwrite:
            raise OutputExistsError(f"{self.path} exists; pass --force to replace it or choose another -o path")

    def _check_metadata(self) -> None:
        """Refuse, before any row is computed, metadata that would make a file no reader accepts."""
        try:
            validate({**self._meta, "datasets": {}})
        except SchemaViolation as e:
            raise ConfigError(f"metadata {e}; it would not follow format {FORMAT_VERSION} (formats/SPEC.md)") from e
        v = self._meta["views"]
        if bool(v["replay"]) != bool(self.k) or (self.k and v["per_sample"] != self.k):
            raise ConfigError(f"views.replay={v['replay']} and views.per_sample={v['per_sample']} do not fit "
                              f"views_per_sample={self.k}: replay must be true exactly when per-view tables "
                              "are stored, and per_sample must then equal views_per_sample")

    def _create(self, sample_digests: np.ndarray) -> None:
        f, n, c = self._f, self.n, self.c
        self._t: dict[str, _Table] = {}
        self._aux: dict[str, np.ndarray] = {}

        def table(path: str, shape: tuple[int, ...], dtype: str) -> _Table:
            group, _, name = path.rpartition("/")
            g = f.require_group(group) if group else f
            # per-view tables [N, K, ...]: keep a chunk near chunk_rows rows of r values
            per_view = name.startswith("views") or path == VIEW_PARAMS
            rows = max(1, self.chunk_rows // self.k) if per_view and self.k else self.chunk_rows
            t = _Table(codecs.create_table(g, name, shape, dtype, self.codec, rows), self.codec)
            self._t[path] = t
            return t

        table(LABELS, (n,), "int64").append(self.labels)
        table(SAMPLE_DIGESTS, (n,), "uint64").append(sample_digests)
        counts = np.bincount(self.labels, minlength=c).astype(np.int64)
        table(CLASS_COUNTS, (c,), "int64").append(counts)
        self._counts = counts
        if self.k:
            table(VIEW_PARAMS, (n, self.k, 3), "int16")
        layer_meta = []
        for i, sp in enumerate(self.layers):
            g = f"layers/{i}"
            tables: dict[str, Any] = {}
            if not sp.redacted:
                table(f"{g}/projection", (sp.d, sp.r), "float32").append(sp.R.astype(np.float32))
            kinds = [t for t in self.tables] + (["views"] if self.k else [])
            for kind in kinds:
                rows = c if kind == "class" else n
                shape = (rows, self.k, sp.r) if kind == "views" else (rows, sp.r)
                table(f"{g}/{kind}", shape, self.dtype)
                scale = None
                if self.dtype == "int8":
                    scale = f"{g}/{kind}_scale"
                    table(scale, shape[:-1], "float32")
                tables[kind] = {"dataset": f"{g}/{kind}", "scale": scale, "fidelity_min_cos": 1.0}
            layer_meta.append({
                "name": sp.name, "pooling": sp.pooling, "d": int(sp.d), "group": g,
                "projection": {"r": sp.r, "seed": None if sp.redacted else int(sp.seed),
                               "generator": GENERATOR, "column_norm": "l2",
                               "sha256": projection_sha256(sp.R), "stored": not sp.redacted},
                "tables": tables,
            })
        self._meta["layers"] = layer_meta

    # ---------------------------------------------------------------- streaming
    @property
    def rows_written(self) -> int:
        return self._done

    def append(self, rows: Mapping[str, np.ndarray], views: Mapping[str, np.ndarray] | None = None,
               view_params: np.ndarray | None = None) -> None:
        """Append the next B samples' fingerprints.

        Args:
            rows: layer name -> float32 [B, r] per-sample fingerprints.
            views: layer name -> float32 [B, K, r] per-view fingerprints (only with views_per_sample).
            view_params: int [B, K, 3] (top, left, flip) of each view (only with views_per_sample).
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
        labels = self.labels[self._done:self._done + b]
        try:
            if self.k:
                vp = np.asarray(view_params)
                if vp.shape != (b, self.k, 3):
                    raise MismatchError(f"view_params must be [{b}, {self.k}, 3], got {list(vp.shape)}")
                self._t[VIEW_PARAMS].append(vp.astype(np.int16))
            for i, sp in enumerate(self.layers):
                arr = np.asarray(rows[sp.name], dtype=np.float32)
                np.add.at(self._class_sum[i], labels, arr.astype(np.float64))
                if "sample" in self.tables:
                    self._store(i, "sample", arr)
                if self.k:
                    v = np.asarray(views[sp.name], dtype=np.float32)
                    if v.shape != (b, self.k, sp.r):
                        raise MismatchError(f"layer {sp.name}: views must be [{b}, {self.k}, {sp.r}], got {list(v.shape)}")
                    self._store(i, "views", v)
        except OSError as e:
            raise _os_error(e, self.path) from e
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
            hint = ("; they exceed float16's range (|x| <= 65504): store float32" if finite.all() else "")
            raise NonFiniteError(f"layer {name}: non-finite fingerprint values at samples {bad[:10]}{hint}")

    def _store(self, i: int, kind: str, values: np.ndarray) -> None:
        g = f"layers/{i}"
        stored, scale = quantize.encode(values, self.dtype)
        self._t[f"{g}/{kind}"].append(stored)
        if scale is not None:
            self._t[f"{g}/{kind}_scale"].append(scale)
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
            for i, lm in enumerate(self._meta["layers"]):
                for kind, info in lm["tables"].items():
                    info["fidelity_min_cos"] = round(self._fidelity.get((i, kind), 1.0), 9)
            self._meta["datasets"] = datasets
            try:
                text = json.dumps(self._meta, sort_keys=True, separators=(",", ":"), allow_nan=False)
            except ValueError as e:
                raise FormatError(f"the metadata of {self.path} holds a NaN or infinite number, which JSON "
                                  "cannot carry; check the values given to the writer (normalisation, "
                                  "accuracy)") from e
            f = self._f
            f.attrs[ATTR_METADATA] = text
            f.attrs[ATTR_COMPLETE] = hashlib.sha256(text.encode()).hexdigest()
            f.close()
            _fsync(self._tmp)
            os.replace(self._tmp, self.path)
            _fsync_dir(self.path.parent)
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError) and not isinstance(e, StorageError):
                raise _os_error(e, self.path) from e
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

    def __enter__(self) -> "FingerprintWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:  # some filesystems do not allow fsync on folders
        pass


def _os_error(e: BaseException, path: Path) -> BaseException:
    if not isinstance(e, OSError) or isinstance(e, (StorageError, FpkitPermissionError)):
        return e
    if getattr(e, "errno", None) == errno.ENOSPC or "No space" in str(e):
        return StorageError(errno.ENOSPC, f"disk full while writing {path}; free space or choose another -o path")
    if isinstance(e, PermissionError):
        return FpkitPermissionError(f"cannot write {path}: {e}; choose a writable -o path")
    return StorageError(getattr(e, "errno", None) or errno.EIO, f"writing {path} failed: {e}")
