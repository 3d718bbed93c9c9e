"""Format 1.3's logit tables (formats/SPEC.md section 4b): the teacher's classifier output.

A file holds at most one logit table, of one kind, in the root group ``logits`` marked
``must_understand`` = false, described by the top-level metadata field ``logits`` (marked too, so a
1.0-1.2 reader ignores both and reads the fingerprints as before):

* ``mean``: ``logits/mean`` [N, C], per sample the arithmetic mean over its K views of the raw
  logits z.  Because log-softmax(z/T) = z/T - logsumexp(z/T), softmax(mean_k z_k / T) is the
  normalised geometric mean of the views' distributions softmax(z_k / T), for every T: the mean of
  the logits keeps the temperature free (a mean of probabilities would fix T at build time).
* ``full``: ``logits/views`` [N, K, C], every view's logits (replay files).
* ``topk``: ``logits/topk_values`` [N, K, k] (the k largest logits of each view, descending; ties
  by lower class index) and ``logits/topk_indices`` int32 [N, K, k].  The mass of the other C - k
  classes is not recorded; fpkit's loss renormalises over the k classes (a biased target).
* ``sample``: ``logits/sample_indices`` int32 [N, K, k]: k classes drawn independently, with
  replacement, from softmax(z / temperature) of each view (sorted ascending).  The draws' empirical
  distribution is an unbiased estimate of the teacher's distribution at that temperature.

Values are float16 unless the file's tables are float32 (then float32).  The datasets' digests
are in ``logits.datasets`` (not in the top-level ``datasets``, which a 1.2 reader checks exactly).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import h5py
import numpy as np

from ..errors import (
    ConfigError,
    CorruptFileError,
    FormatError,
    FpkitError,
    MismatchError,
    NonFiniteError,
    UnknownFieldError,
)
from . import checks, codecs
from ._stream import StreamedTable
from .digests import table_sha256
from .layout import LOGITS_VERSION, DatasetLayout, version_tuple
from .metadata import DatasetEntry

GROUP = "logits"
FIELD = "logits"
KINDS = ("mean", "full", "topk", "sample")
PER_VIEW = ("full", "topk", "sample")
DTYPES = ("float16", "float32")
MEAN, VIEWS = f"{GROUP}/mean", f"{GROUP}/views"
TOPK_VALUES, TOPK_INDICES, SAMPLE_INDICES = f"{GROUP}/topk_values", f"{GROUP}/topk_indices", f"{GROUP}/sample_indices"
_U64 = 2**64


@dataclass(frozen=True)
class LogitsSpec:
    """Which logit table a file stores.  ``k``: entries per view (topk, sample); ``temperature``
    and ``seed``: of the draws (sample only); ``dtype``: of the values (float16 or float32)."""

    kind: str
    k: int | None = None
    dtype: str = "float16"
    temperature: float | None = None
    seed: int | None = None

    @classmethod
    def parse(cls, text: str, *, dtype: str = "float16", seed: int = 0) -> LogitsSpec | None:
        """``none``, ``mean``, ``full``, ``topk:K`` or ``sample:K[:T]`` (T default 1) -> spec or None.

        Raises:
            ConfigError: another text (the message lists the forms).
        """
        kind, *rest = str(text).strip().split(":")
        forms = "use none, mean, full, topk:K or sample:K[:T] (for example topk:5, sample:32:4)"
        try:
            if kind == "none" and not rest:
                return None
            if kind in ("mean", "full") and not rest:
                return cls(kind, dtype=dtype)
            if kind == "topk" and len(rest) == 1:
                return cls("topk", int(rest[0]), dtype)
            if kind == "sample" and len(rest) in (1, 2):
                return cls("sample", int(rest[0]), dtype, float(rest[1]) if len(rest) == 2 else 1.0, seed)
        except ValueError:
            pass
        raise ConfigError(f"--logits {text!r} is not understood; {forms}")

    @property
    def per_view(self) -> bool:
        return self.kind in PER_VIEW

    def problem(self, c: int, views: int | None) -> str | None:
        """Why this spec cannot describe a file of C classes and K replayed views (None: it can)."""
        if self.kind not in KINDS:
            return f"logits.kind {self.kind!r} is not one of {', '.join(KINDS)}"
        if self.dtype not in DTYPES:
            return f"logits.dtype {self.dtype!r} is not float16 or float32"
        if self.per_view and not views:
            return f"logits {self.kind} are stored per view and need a replay file (--replay)"
        sparse = self.kind in ("topk", "sample")
        if sparse != (self.k is not None) or (sparse and not 1 <= self.k <= (c if self.kind == "topk" else 65535)):
            return f"logits {self.kind} needs k in [1, {c if self.kind == 'topk' else 65535}], got {self.k}"
        t = self.temperature
        if (self.kind == "sample") != (t is not None) or (t is not None and not (math.isfinite(t) and t > 0)):
            return f"logits.temperature must be a positive number for sample and absent otherwise, got {t}"
        s = self.seed
        if (self.kind == "sample") != (s is not None) or (s is not None and not 0 <= s < _U64):
            return f"logits.seed must be an integer in [0, 2^64) for sample and absent otherwise, got {s}"
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "dtype": self.dtype, "must_understand": False}
        out.update(
            {k: v for k, v in (("k", self.k), ("temperature", self.temperature), ("seed", self.seed)) if v is not None}
        )
        return out


@dataclass(frozen=True)
class LogitsInfo:
    """The metadata field ``logits`` as read: the spec and the stored datasets' entries."""

    spec: LogitsSpec
    datasets: Mapping[str, DatasetEntry] = field(default_factory=dict)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LogitsInfo:
        t = d.get("temperature")
        spec = LogitsSpec(d["kind"], d.get("k"), d["dtype"], None if t is None else float(t), d.get("seed"))
        return cls(spec, {p: DatasetEntry.from_json(e) for p, e in d.get("datasets", {}).items()})


def datasets(spec: LogitsSpec, n: int, c: int, views: int | None) -> list[DatasetLayout]:
    """The datasets of the table, in the order the writer creates them (section 4b)."""
    kv, k = views or 0, spec.k or 0
    if spec.kind == "mean":
        return [DatasetLayout(MEAN, (n, c), spec.dtype)]
    if spec.kind == "full":
        return [DatasetLayout(VIEWS, (n, kv, c), spec.dtype, per_view=True)]
    if spec.kind == "topk":
        return [
            DatasetLayout(TOPK_VALUES, (n, kv, k), spec.dtype, per_view=True),
            DatasetLayout(TOPK_INDICES, (n, kv, k), "int32", per_view=True),
        ]
    return [DatasetLayout(SAMPLE_INDICES, (n, kv, k), "int32", per_view=True)]


def topk(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest logits of each row (descending, ties by lower index) and their int32 indices."""
    idx = np.argsort(-np.asarray(z, dtype=np.float32), axis=-1, kind="stable")[..., :k]
    return np.take_along_axis(z, idx, axis=-1), idx.astype(np.int32)


def sample_draws(z: np.ndarray, k: int, temperature: float, seed: int, first: int) -> np.ndarray:
    """int32 [B, K, k]: k draws per view from softmax(z / T) (float64), sorted; sample ``first + b``
    uses ``numpy.random.default_rng([seed, first + b])``, so any batching gives the same draws."""
    return sample_draws_at(z, k, temperature, seed, np.arange(first, first + np.shape(z)[0]))


def sample_draws_at(z: np.ndarray, k: int, temperature: float, seed: int, rows: np.ndarray) -> np.ndarray:
    """:func:`sample_draws` of the samples ``rows`` (their indices in the file), in any order."""
    z = np.asarray(z, dtype=np.float64) / temperature
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=-1, keepdims=True), axis=-1)
    out = np.empty(z.shape[:2] + (k,), dtype=np.int32)
    for b in range(z.shape[0]):
        u = np.random.default_rng([seed, int(rows[b])]).random((z.shape[1], k))
        for j in range(z.shape[1]):
            out[b, j] = np.minimum(np.searchsorted(cdf[b, j], u[j] * cdf[b, j, -1], side="right"), z.shape[2] - 1)
    return np.sort(out, axis=-1)


def encode(spec: LogitsSpec, z: np.ndarray, first: int) -> dict[str, np.ndarray]:
    """The stored arrays of a batch: ``z`` float32 [B, C] (mean) or [B, K, C] (per-view kinds)."""
    if spec.kind == "mean":
        return {MEAN: z.astype(spec.dtype)}
    if spec.kind == "full":
        return {VIEWS: z.astype(spec.dtype)}
    if spec.kind == "topk":
        values, idx = topk(z, spec.k)
        return {TOPK_VALUES: values.astype(spec.dtype), TOPK_INDICES: idx}
    return {SAMPLE_INDICES: sample_draws(z, spec.k, spec.temperature, spec.seed, first)}


def check_spec(spec: LogitsSpec | None, c: int, views: int | None, version: str) -> None:
    """Refuse, before anything is written, a spec the file cannot hold (ConfigError)."""
    if spec is None:
        return
    if problem := spec.problem(c, views):
        raise ConfigError(f"{problem}; fix the --logits option")
    if version_tuple(version) < version_tuple(LOGITS_VERSION):
        raise ConfigError(f"logit tables need format {LOGITS_VERSION}; leave version= out to write it")


class LogitStreams:
    """The writer's side: the marked group, its datasets, batches appended in sample order."""

    def __init__(self, f: h5py.File, spec: LogitsSpec, shape: tuple[int, int, int | None], codec: str, rows: int):
        n, c, kv = shape
        self.spec, self.c, self.kv, self.done = spec, c, kv, 0
        g = f.create_group(GROUP)
        g.attrs[checks.MARKER] = False
        g.attrs["description"] = f"format 1.3: the teacher's logits ({spec.kind}); see the metadata field 'logits'"
        self.tables = {}
        for ds in datasets(spec, n, c, kv):
            dset = codecs.create_table(
                g, ds.path.rpartition("/")[2], ds.shape, ds.dtype, codec, ds.chunk_rows(rows, kv)
            )
            self.tables[ds.path] = StreamedTable(dset, codec)

    def check(self, z: Any, b: int) -> np.ndarray:
        """The batch as float32, refused if its shape is wrong or a value is not finite (or beyond
        float16's range when storing float16)."""
        if z is None:
            raise MismatchError("this file stores logits: pass logits= to append")
        if isinstance(z, Mapping):
            return self._check_encoded(z, b)
        arr = np.asarray(z, dtype=np.float32)
        want = (b, self.c) if self.spec.kind == "mean" else (b, self.kv, self.c)
        if arr.shape != want:
            raise MismatchError(f"logits must be {list(want)}, got {list(arr.shape)}")
        limit = 65504 if self.spec.dtype == "float16" else np.inf
        bad = ~(np.isfinite(arr) & (np.abs(arr) <= limit)).reshape(b, -1).all(axis=1)
        if bad.any():
            hint = "" if np.isfinite(arr).all() else " (NaN or infinite)"
            rows = (np.flatnonzero(bad) + self.done)[:10].tolist()
            raise NonFiniteError(
                f"logits at samples {rows} cannot be stored{hint}; store float32 (--dtype float32) or check the teacher"
            )
        return arr

    def _check_encoded(self, z: Mapping[str, Any], b: int) -> dict[str, np.ndarray]:
        """A batch already reduced to the stored tables (topk, sample: what a build's compute loop
        keeps), checked like the writer's own encoding: shapes, finite values, indices in [0, C)."""
        want = {d.path: d for d in datasets(self.spec, b, self.c, self.kv)}
        if set(z) != set(want) or self.spec.kind not in ("topk", "sample"):
            raise MismatchError(f"encoded logits must hold {sorted(want)} ({self.spec.kind}), got {sorted(z)}")
        out = {}
        for path, d in want.items():
            arr = np.asarray(z[path])
            if arr.shape != d.shape:
                raise MismatchError(f"{path} must be {list(d.shape)}, got {list(arr.shape)}")
            if d.dtype == "int32":
                if arr.size and (arr.min() < 0 or arr.max() >= self.c):
                    raise MismatchError(f"{path} holds class indices outside [0, {self.c})")
                out[path] = arr.astype(np.int32)
                continue
            arr = arr.astype(np.float32)
            limit = 65504 if self.spec.dtype == "float16" else np.inf
            bad = ~(np.isfinite(arr) & (np.abs(arr) <= limit)).reshape(b, -1).all(axis=1)
            if bad.any():
                rows = (np.flatnonzero(bad) + self.done)[:10].tolist()
                raise NonFiniteError(f"logits at samples {rows} cannot be stored; store float32 (--dtype float32)")
            out[path] = arr.astype(self.spec.dtype)
        return out

    def append(self, arr: np.ndarray | Mapping[str, np.ndarray]) -> None:
        """Append a batch: float32 logits (encoded here) or the checked encoded tables."""
        encoded = arr if isinstance(arr, Mapping) else encode(self.spec, arr, self.done)
        for path, values in encoded.items():
            self.tables[path].append(values)
        self.done += next(iter(encoded.values())).shape[0]

    def finish(self) -> dict[str, Any]:
        """The metadata field ``logits``, with the datasets' entries."""
        entries = {path: t.finish().to_json() for path, t in sorted(self.tables.items())}
        return {**self.spec.to_json(), "datasets": entries}


# ----------------------------------------------------------------------------- reading


def info_of(meta: Any) -> LogitsInfo | None:
    d = meta.extras.get(FIELD)
    return None if d is None else LogitsInfo.from_json(d)


_H5_ERRORS = (KeyError, OSError, RuntimeError, ValueError, TypeError)


def check_structure(checker: Any) -> LogitsInfo | None:
    """Section 10 for the logit table of a checked file (after ``checker.structure``): the field
    and the marked group come together, the datasets are those of the spec, stored by section 9."""
    try:
        return _check_structure(checker)
    except FpkitError:
        raise
    except _H5_ERRORS as e:
        raise CorruptFileError(f"{checker.path}: the logit table cannot be opened ({e}); the file is damaged") from e


def _check_structure(checker: Any) -> LogitsInfo | None:
    f, meta, p = checker.f, checker.meta, checker.path
    info = info_of(meta)
    has_group = GROUP in f and isinstance(f.get(GROUP, getlink=True), h5py.HardLink)
    if info is None:
        if has_group and version_tuple(checker.version) >= version_tuple(LOGITS_VERSION):
            raise FormatError(f"{p}: a 'logits' group without the metadata field 'logits'; the file is damaged")
        return None
    ds = meta.dataset
    views = meta.views.per_sample if meta.views.replay else None
    if problem := info.spec.problem(ds.num_classes, views):
        raise FormatError(f"{p}: {problem}; this file does not follow format {checker.version}")
    want = {d.path: d for d in datasets(info.spec, ds.num_samples, ds.num_classes, views)}
    if set(info.datasets) != set(want):
        raise FormatError(f"{p}: logits.datasets lists {sorted(info.datasets)}, expected {sorted(want)}")
    for path, d in want.items():
        e = info.datasets[path]
        if e.shape != d.shape or e.dtype != d.dtype:
            raise FormatError(f"{p}: {path} is listed as {e.dtype}{list(e.shape)}, expected {d.dtype}{list(d.shape)}")
    if not has_group or not isinstance(f[GROUP], h5py.Group) or not checks.marked_ignorable(f[GROUP]):
        raise FormatError(f"{p}: the metadata has 'logits' but the file has no marked group 'logits'; rebuild it")
    g = f[GROUP]
    extra = [f"{GROUP}/{k}" for k in g.keys() if f"{GROUP}/{k}" not in want and not checks.marked_ignorable(g[k])]
    if extra:
        raise UnknownFieldError(
            f"{p}: unknown objects {sorted(extra)[:5]} in 'logits'; a newer fpkit may understand this file"
        )
    for path, d in want.items():
        if path.rpartition("/")[2] not in g:
            raise CorruptFileError(f"{p}: dataset {path} is missing; the file is damaged: download or rebuild it")
        obj = f[path]
        if not isinstance(obj, h5py.Dataset) or obj.shape != d.shape or obj.dtype != np.dtype(d.dtype):
            raise FormatError(f"{p}: dataset {path} is not {d.dtype}{list(d.shape)}; the file is damaged or edited")
        checker._check_storage(d, obj)
    return info


def load(checker: Any, info: LogitsInfo, verify: bool, problems: list[str] | None) -> dict[str, np.ndarray]:
    """Read the table's datasets, check their SHA-256 and that indices lie in [0, C)."""
    out: dict[str, np.ndarray] = {}
    c = checker.meta.dataset.num_classes
    for path, entry in sorted(info.datasets.items()):
        msg = None
        try:
            arr = codecs.read_table(checker.f[path], checker.meta.storage.codec)
        except FpkitError:
            raise
        except _H5_ERRORS as e:
            msg, arr = f"{path} cannot be read ({e}); the file is damaged: download or rebuild it", None
        if arr is None:
            pass
        elif verify and table_sha256(arr) != entry.sha256:
            msg = (
                f"table {path} does not match its SHA-256 (content changed after writing); download or rebuild the file"
            )
        elif arr.dtype == np.int32 and arr.size and (arr.min() < 0 or arr.max() >= c):
            msg = f"{path} holds class indices outside [0, {c}); the file is damaged or was edited"
        elif arr.dtype != np.int32 and not np.isfinite(arr).all():
            msg = f"{path} holds NaN or infinite logits; the file is damaged or was edited"
        if msg is not None:
            if problems is None:
                raise CorruptFileError(f"{checker.path}: {msg}")
            problems.append(f"{checker.path}: {msg}")
            continue
        out[path] = arr
    return out


__all__ = [
    "KINDS",
    "LogitStreams",
    "LogitsInfo",
    "LogitsSpec",
    "datasets",
    "encode",
    "sample_draws",
    "sample_draws_at",
    "topk",
]
