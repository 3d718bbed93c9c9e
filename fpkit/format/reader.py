"""Reading and verifying fingerprint files (format v1).

:func:`open_fingerprints` opens read-only without file locks, validates the whole structure
before allocating anything, loads every table into memory, checks each table's SHA-256, and
closes the file before returning.  The resulting :class:`FingerprintFile` holds only numpy
arrays and plain data: it pickles, and DataLoader workers (fork or spawn) can share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import h5py
import numpy as np

from ..errors import (ConfigError, CorruptFileError, FormatError, FpkitError, FpkitFileNotFoundError,
                      FpkitPermissionError, IncompleteFileError, RedactedError, UnknownFieldError,
                      UnsupportedVersionError)
from . import codecs, quantize
from ..projection import projection_sha256
from ._validate import SchemaViolation, validate
from .spec import (ATTR_COMPLETE, ATTR_FORMAT, ATTR_METADATA, ATTR_VERSION, CLASS_COUNTS,
                   FORMAT_NAME, LABELS, SAMPLE_DIGESTS, SUPPORTED_MAJOR, VIEW_PARAMS)
from .writer import labels_sha256, order_sha256

_ATTRS = {ATTR_FORMAT, ATTR_VERSION, ATTR_METADATA, ATTR_COMPLETE}
_VERSION_RE = re.compile(r"[0-9]+\.[0-9]+", re.ASCII)


def strict_json_loads(text: str) -> Any:
    """``json.loads`` that accepts JSON only: NaN/Infinity (a Python extension) and an object
    that repeats a key (other parsers may keep another of the values) raise ValueError."""
    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON value")

    def pairs(items: list[tuple[str, Any]]) -> dict:
        out = dict(items)
        if len(out) != len(items):
            seen: set[str] = set()
            dup = next(k for k, _ in items if k in seen or seen.add(k))
            raise ValueError(f"key {dup!r} appears twice in one object")
        return out

    return json.loads(text, parse_constant=constant, object_pairs_hook=pairs)


def _is_per_view(path: str) -> bool:
    """The datasets with one row per (sample, view): chunked by chunk_rows // K (format section 9)."""
    return path.endswith("/views") or path.endswith("/views_scale") or path == VIEW_PARAMS


def _marked_ignorable(obj: Any) -> bool:
    """True if an HDF5 object carries the attribute must_understand = false (a boolean scalar)."""
    try:
        v = obj.attrs.get("must_understand", True)
    except Exception:
        return False
    return isinstance(v, (bool, np.bool_)) and not bool(v)


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


@dataclass(eq=False)
class FingerprintFile:
    """A fingerprint file loaded into memory (no open HDF5 handle)."""

    path: str
    format_version: str
    metadata: dict
    layers: tuple[LayerInfo, ...]
    arrays: dict[str, np.ndarray]
    _decoded: dict = field(default_factory=dict, repr=False)

    def __eq__(self, other: object) -> bool:
        # the generated __eq__ would compare numpy arrays with ==, which raises ValueError
        if not isinstance(other, FingerprintFile):
            return NotImplemented
        return (self.path == other.path and self.format_version == other.format_version
                and self.metadata == other.metadata and self.layers == other.layers
                and self.arrays.keys() == other.arrays.keys()
                and all(a.dtype == other.arrays[k].dtype and np.array_equal(a, other.arrays[k])
                        for k, a in self.arrays.items()))

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass default

    # ---- identity
    @property
    def num_samples(self) -> int:
        return int(self.metadata["dataset"]["num_samples"])

    @property
    def num_classes(self) -> int:
        return int(self.metadata["dataset"]["num_classes"])

    @property
    def classes(self) -> list[str]:
        return list(self.metadata["dataset"]["classes"])

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
            raise ConfigError(f"{self.path} has no {kind!r} table for layer {lay.name} (it has "
                              f"{', '.join(lay.tables)}: ask for one of those, or rebuild with {hint})")
        key = (lay.index, kind)
        if key not in self._decoded:
            info = self.metadata["layers"][lay.index]["tables"][kind]
            scale = self.arrays[info["scale"]] if info["scale"] else None
            self._decoded[key] = quantize.decode(self.arrays[info["dataset"]], scale)
        return self._decoded[key]

    def projection(self, layer: str | None = None) -> np.ndarray:
        """The float32 projection R [d, r] of a layer.

        Raises:
            RedactedError: the file was built with --redact and does not hold R.
        """
        lay = self.layer(layer)
        if not lay.projection_stored:
            raise RedactedError(f"{self.path} was built redacted: layer {lay.name} has no projection R; "
                                "use the relational loss, which needs no R")
        return self.arrays[f"layers/{lay.index}/projection"]


def open_fingerprints(path: str | os.PathLike, *, verify: bool = True, load_views: bool = True,
                      max_bytes: int | None = None) -> FingerprintFile:
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
    r = _Reader(path)
    try:
        r.structure(max_bytes=max_bytes)
        r.load(verify=verify, load_views=load_views, problems=None)
    finally:
        r.close()
    return r.result()


def verify_fingerprints(path: str | os.PathLike) -> list[str]:
    """Check a file completely; return the list of problems (empty when intact).

    Structural problems (not HDF5, unknown version, incomplete, schema) end the check at the first
    one; content problems (checksums, digests) are all collected.
    """
    try:
        r = _Reader(path)
    except FpkitError as e:
        return [str(e)]
    problems: list[str] = []
    try:
        r.structure(max_bytes=None)
        r.load(verify=True, load_views=True, problems=problems)
    except FpkitError as e:
        problems.append(str(e))
    finally:
        r.close()
    return problems


_GCOL = b"GCOL\x01\x00\x00\x00"  # global heap collection: signature, version 1, 3 reserved bytes


def _global_heap_problem(path: Path) -> str | None:
    """Check the object headers of every global heap collection ("GCOL") before libhdf5 reads one.

    The root attributes are variable-length strings kept in global heaps.  libhdf5 (2.0.0 included)
    loops forever on a collection whose object sizes do not tile it (a free-space object of size
    0, for instance): single bit flips in these headers hang ``attrs[...]``.  The walk below is
    the one libhdf5 makes, refusing what would send it astray.  JSON text cannot contain the
    signature's control bytes, so only real collections (or table bytes, with odds ~2**-64 per
    position) match.  Assumes 8-byte lengths, which every h5py-written file has.
    """
    import mmap
    import struct
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size < 16:
                return None
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                if mm[:8] == b"\x89HDF\r\n\x1a\n" and mm[8] == 0 and mm[14] != 8:
                    return None  # superblock v0 with lengths of another size: not an h5py layout
                at = mm.find(_GCOL)
                while at != -1:
                    if at + 16 > size:
                        return f"global heap at byte {at} is truncated"
                    (length,) = struct.unpack_from("<Q", mm, at + 8)
                    end = at + length
                    if length < 4096 or end > size:
                        return f"global heap at byte {at} claims {length} bytes"
                    o = at + 16
                    while o + 16 <= end:
                        idx, _refs, _res, n = struct.unpack_from("<HHIQ", mm, o)
                        if idx == 0:  # free space: the rest of the collection
                            if n != end - o:
                                return f"global heap at byte {at}: free space of {n} bytes at byte {o}"
                            break
                        need = 16 + (n + 7) // 8 * 8
                        if o + need > end:
                            return f"global heap at byte {at}: object {idx} of {n} bytes overruns it"
                        o += need
                    at = mm.find(_GCOL, at + 8)
    except (OSError, ValueError):
        return None  # unreadable here: h5py will say why
    return None


class _Reader:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FpkitFileNotFoundError(f"{self.path} does not exist; check the path")
        if self.path.is_dir():
            raise FormatError(f"{self.path} is a folder, not a fingerprint file; give the .h5 file inside it")
        if not os.access(self.path, os.R_OK):
            raise FpkitPermissionError(f"{self.path} is not readable; check its permissions")
        try:
            is_h5 = h5py.is_hdf5(self.path)
        except OSError:
            is_h5 = False
        if not is_h5:
            raise FormatError(f"{self.path} is not an HDF5 file, so not an fpkit fingerprint file; "
                              "give a file written by `fpkit build`")
        bad_heap = _global_heap_problem(self.path)
        if bad_heap:
            raise CorruptFileError(f"{self.path} is damaged: {bad_heap}; download or rebuild it")
        try:
            self.f = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            raise CorruptFileError(f"{self.path} is damaged or truncated (HDF5: {e}); download or rebuild it") from e

    def close(self) -> None:
        try:
            self.f.close()
        except Exception:
            pass

    def _attr(self, name: str) -> Any:
        try:
            v = self.f.attrs[name]
        except KeyError:
            return None
        except (OSError, RuntimeError, TypeError, ValueError) as e:
            raise CorruptFileError(f"{self.path}: root attribute {name!r} cannot be read ({e})") from e
        try:
            kind = h5py.check_string_dtype(self.f.attrs.get_id(name).dtype)
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
            raise CorruptFileError(f"{self.path}: root attribute {name!r} cannot be read ({e})") from e
        if kind is None or kind.length is not None or kind.encoding != "utf-8":
            raise FormatError(f"{self.path}: root attribute {name!r} is not a variable-length UTF-8 string "
                              "as the format requires; this is not a fingerprint file fpkit wrote")
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorruptFileError(f"{self.path}: root attribute {name!r} is not valid UTF-8") from e
        if not isinstance(v, str):  # an array, number or opaque value: comparing it would raise
            raise FormatError(f"{self.path}: root attribute {name!r} is a {type(v).__name__}, not a string; "
                              "this is not a fingerprint file fpkit wrote")
        try:  # h5py decodes invalid UTF-8 into lone surrogates, which cannot be hashed
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise CorruptFileError(f"{self.path}: root attribute {name!r} is not valid UTF-8; "
                                   "the file is damaged: download or rebuild it") from e
        return v

    def structure(self, max_bytes: int | None) -> None:
        p = self.path
        fmt = self._attr(ATTR_FORMAT)
        if fmt != FORMAT_NAME:
            raise FormatError(f"{p} is an HDF5 file but not an fpkit fingerprint file "
                              f"(root attribute 'format' is {fmt!r}, expected {FORMAT_NAME!r})")
        version = self._attr(ATTR_VERSION)
        if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
            raise FormatError(f"{p}: format_version {version!r} is not MAJOR.MINOR (two decimal integers)")
        major, minor = (int(x) for x in version.split("."))
        if major != SUPPORTED_MAJOR:
            raise UnsupportedVersionError(
                f"{p} uses fingerprint format {version}; this fpkit reads major version "
                f"{SUPPORTED_MAJOR} only; upgrade fpkit (pip install -U fpkit)")
        self.version = f"{major}.{minor}"
        complete = self._attr(ATTR_COMPLETE)
        if complete is None:
            raise IncompleteFileError(f"{p} was never finished (no completion marker): its write was "
                                      "interrupted; rebuild it, or continue with `fpkit build --resume`")
        text = self._attr(ATTR_METADATA)
        if not isinstance(text, str):
            raise FormatError(f"{p}: the metadata attribute is missing")
        if hashlib.sha256(text.encode()).hexdigest() != complete:
            raise CorruptFileError(f"{p}: the metadata does not match its digest; the file is damaged: download or rebuild it")
        try:
            unknown_attrs = sorted(set(self.f.attrs.keys()) - _ATTRS)
        except (OSError, RuntimeError, KeyError, ValueError) as e:  # ValueError: names not UTF-8
            raise CorruptFileError(f"{p}: the root attributes cannot be listed ({e}); the file is damaged") from e
        if unknown_attrs:  # an attribute cannot carry a must_understand marker: never ignorable
            raise UnknownFieldError(f"{p}: unknown root attributes {unknown_attrs[:5]} (not in format "
                                    f"{self.version}); a newer fpkit may understand this file")
        try:
            meta = strict_json_loads(text)
        except ValueError as e:   # json.JSONDecodeError is a ValueError
            raise FormatError(f"{p}: the metadata is not valid JSON ({e})") from e
        try:
            validate(meta)
        except SchemaViolation as e:
            cls = UnknownFieldError if e.unknown_field else FormatError
            raise cls(f"{p}: metadata {e}; this file does not follow format {self.version}"
                      + ("; a newer fpkit may understand it" if e.unknown_field else "")) from e
        self.meta = meta
        self._check_consistency(meta, max_bytes)

    def _check_consistency(self, meta: dict, max_bytes: int | None) -> None:
        p = self.path
        ds = meta["dataset"]
        n, c = ds["num_samples"], ds["num_classes"]
        if len(ds["classes"]) != c:
            raise FormatError(f"{p}: {len(ds['classes'])} class names for num_classes={c}")
        views = meta["views"]
        policy = views["policy"]
        per_policy = (2 * policy["padding"] + 1) ** 2 * (2 if policy["flip"] else 1)
        want_k = per_policy if views["count"] == "all" else views["count"]
        if views["per_sample"] != want_k:
            raise FormatError(f"{p}: views.per_sample is {views['per_sample']} but views.count "
                              f"{views['count']!r} with this policy means {want_k}")
        k = views["per_sample"] if views["replay"] else None
        expected: dict[str, tuple[tuple[int, ...], str]] = {
            LABELS: ((n,), "int64"), SAMPLE_DIGESTS: ((n,), "uint64"), CLASS_COUNTS: ((c,), "int64")}
        if k:
            expected[VIEW_PARAMS] = ((n, k, 3), "int16")
        dtype = meta["storage"]["dtype"]
        groups = set()
        for i, lay in enumerate(meta["layers"]):
            g = f"layers/{i}"
            if lay["group"] != g:
                raise FormatError(f"{p}: layer {i} has group {lay['group']!r}, expected {g!r}")
            groups.add(g)
            r = lay["projection"]["r"]
            if lay["projection"]["stored"]:
                expected[f"{g}/projection"] = ((lay["d"], r), "float32")
            elif lay["projection"]["seed"] is not None:
                raise FormatError(f"{p}: layer {lay['name']} is redacted but records a seed")
            if lay["projection"]["stored"] and lay["projection"]["seed"] is None:
                raise FormatError(f"{p}: layer {lay['name']} stores R but records no seed (null is for redacted layers)")
            if "views" in lay["tables"] and not k:
                raise FormatError(f"{p}: layer {lay['name']} has a views table but views.replay is false")
            for kind, info in lay["tables"].items():
                rows = {"sample": (n,), "class": (c,), "views": (n, k or 0)}[kind]
                if info["dataset"] != f"{g}/{kind}":
                    raise FormatError(f"{p}: table {kind} of layer {i} points to {info['dataset']!r}")
                expected[info["dataset"]] = (rows + (r,), dtype)
                want_scale = f"{g}/{kind}_scale" if dtype == "int8" else None
                if info["scale"] != want_scale:
                    raise FormatError(f"{p}: table {info['dataset']} has scale {info['scale']!r}, expected {want_scale!r}")
                if want_scale:
                    expected[want_scale] = (rows, "float32")
        names = [lay["name"] for lay in meta["layers"]]
        if len(set(names)) != len(names):
            raise FormatError(f"{p}: layer names repeat: {names}")
        listed = meta["datasets"]
        if set(listed) != set(expected):
            missing = sorted(set(expected) - set(listed))
            extra = sorted(set(listed) - set(expected))
            raise FormatError(f"{p}: the dataset list does not fit the metadata (missing {missing}, unexpected {extra})")
        total = 0
        for path, (shape, dt) in expected.items():
            info = listed[path]
            if tuple(info["shape"]) != shape or info["dtype"] != dt:
                raise FormatError(f"{p}: {path} is listed as {info['dtype']}{info['shape']}, expected {dt}{list(shape)}")
            total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
        if meta["storage"]["codec"] == "none" and total > os.path.getsize(p):
            raise CorruptFileError(f"{p}: the metadata claims {total} bytes of tables but the file has "
                                   f"{os.path.getsize(p)}; the file is truncated or damaged")
        if max_bytes is not None and total > max_bytes:
            raise FormatError(f"{p}: tables need {total} bytes, more than the limit of {max_bytes}")
        self._expected = expected
        # every link name must be known, or name an object marked ignorable; the walk meets every
        # link on the way to every expected dataset, so no soft or external link is followed below
        unknown, links = self._unknown_names(set(expected), {"layers"} | groups)
        if links:
            raise FormatError(f"{p}: {links[0][0]} is a {links[0][1]}, not an object stored in the file; "
                              "fpkit does not follow links")
        if unknown:
            raise UnknownFieldError(f"{p}: unknown objects {unknown[:5]} (not in format {self.version} and not "
                                    "marked must_understand=false); a newer fpkit may understand this file")
        for path, (shape, dt) in expected.items():
            try:
                d = self.f[path]
                ok = isinstance(d, h5py.Dataset) and d.shape == shape and d.dtype == np.dtype(dt)
            except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
                raise CorruptFileError(f"{p}: dataset {path} cannot be opened ({e}); the file is damaged") from e
            if not ok:
                got = (f"{d.dtype}{list(d.shape) if d.shape is not None else ' (empty)'}"
                       if isinstance(d, h5py.Dataset) else type(d).__name__)
                raise FormatError(f"{p}: dataset {path} is {got}, expected {dt}{list(shape)}")
            self._check_storage(path, d)

    def _unknown_names(self, expected: set[str], groups: set[str]) -> tuple[list[str], list[tuple[str, str]]]:
        """Walk every link name from the root, descending only into the format's own groups.
        Returns the unknown names that are not marked ignorable, and the soft/external links met
        (a link cannot carry a marker; a second name for a known object is unknown too)."""
        unknown: list[str] = []
        links: list[tuple[str, str]] = []
        todo = [""]
        try:
            while todo:
                prefix = todo.pop()
                g = self.f[prefix] if prefix else self.f
                for key in g.keys():
                    if isinstance(key, bytes):  # h5py hands over names that are not UTF-8 as bytes
                        key = key.decode("utf-8", "backslashreplace")
                    name = f"{prefix}/{key}" if prefix else key
                    link = g.get(key, getlink=True)
                    if not isinstance(link, h5py.HardLink):
                        links.append((name, type(link).__name__))
                    elif name in groups:
                        todo.append(name)
                    elif name not in expected and not _marked_ignorable(g[key]):
                        unknown.append(name)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:  # ValueError: names not UTF-8
            raise CorruptFileError(f"{self.path}: the HDF5 structure cannot be walked ({e}); the file is damaged") from e
        return sorted(unknown), links

    def _check_storage(self, path: str, d: h5py.Dataset) -> None:
        """Refuse a dataset whose bytes live outside this file (external raw storage, virtual)."""
        p = self.path
        try:
            dcpl = d.id.get_create_plist()
            layout = dcpl.get_layout()
            external = dcpl.get_external_count()
        except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
            raise CorruptFileError(f"{p}: dataset {path} cannot be opened ({e}); the file is damaged") from e
        if layout == h5py.h5d.VIRTUAL or external:
            what = "a virtual dataset" if layout == h5py.h5d.VIRTUAL else "stored in external files"
            raise FormatError(f"{p}: dataset {path} is {what}; fpkit reads only data stored inside the file")
        st = self.meta["storage"]
        rows = st["chunk_rows"] // self.meta["views"]["per_sample"] if _is_per_view(path) else st["chunk_rows"]
        want_chunks = (max(1, min(rows, d.shape[0])),) + tuple(d.shape[1:])
        try:
            filters = tuple(dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters()))
        except (OSError, RuntimeError, ValueError) as e:
            raise CorruptFileError(f"{p}: dataset {path} cannot be opened ({e}); the file is damaged") from e
        want_filters = codecs.FILTER_PIPELINES[st["codec"]]
        if d.chunks != want_chunks or filters != want_filters:
            raise FormatError(f"{p}: dataset {path} is stored with chunks {d.chunks} and HDF5 filters {list(filters)}; "
                              f"storage {st['codec']}/chunk_rows {st['chunk_rows']} means chunks {want_chunks} and "
                              f"filters {list(want_filters)} (section 9 of the format)")

    def load(self, verify: bool, load_views: bool, problems: list[str] | None) -> None:
        codec = self.meta["storage"]["codec"]
        self.arrays: dict[str, np.ndarray] = {}
        for path in sorted(self._expected):
            if not load_views and _is_per_view(path):
                continue
            try:
                arr = codecs.read_table(self.f[path], codec)
                if verify:
                    want = self.meta["datasets"][path]["sha256"]
                    got = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
                    if got != want:
                        raise CorruptFileError(f"{self.path}: table {path} does not match its SHA-256 "
                                               "(content changed after writing); download or rebuild the file")
            except CorruptFileError as e:
                if problems is None:
                    raise
                problems.append(str(e))
                continue
            self.arrays[path] = arr
        ds = self.meta["dataset"]
        checks = []
        if LABELS in self.arrays:
            lab = self.arrays[LABELS]
            if lab.size and (lab.min() < 0 or lab.max() >= ds["num_classes"]):
                checks.append(f"labels outside [0, {ds['num_classes']})")
            elif labels_sha256(lab) != ds["labels_sha256"]:
                checks.append("labels do not match dataset.labels_sha256")
            elif CLASS_COUNTS in self.arrays and not np.array_equal(
                    np.bincount(lab, minlength=ds["num_classes"]), self.arrays[CLASS_COUNTS]):
                checks.append("class_counts do not match the labels")
        if SAMPLE_DIGESTS in self.arrays and order_sha256(self.arrays[SAMPLE_DIGESTS]) != ds["order_sha256"]:
            checks.append("sample digests do not match dataset.order_sha256")
        for i, lay in enumerate(self.meta["layers"]):
            key = f"layers/{i}/projection"
            if key in self.arrays and projection_sha256(self.arrays[key]) != lay["projection"]["sha256"]:
                checks.append(f"projection of layer {lay['name']} does not match its SHA-256")
        for msg in checks:
            err = CorruptFileError(f"{self.path}: {msg}; the file is damaged or was edited")
            if problems is None:
                raise err
            problems.append(str(err))

    def result(self) -> FingerprintFile:
        layers = []
        for i, lay in enumerate(self.meta["layers"]):
            pr = lay["projection"]
            layers.append(LayerInfo(
                name=lay["name"], index=i, pooling=lay["pooling"], d=lay["d"], r=pr["r"],
                seed=pr["seed"], generator=pr["generator"], projection_sha256=pr["sha256"],
                projection_stored=pr["stored"], tables=tuple(lay["tables"]),
                fidelity={k: v["fidelity_min_cos"] for k, v in lay["tables"].items()}))
        return FingerprintFile(path=str(self.path), format_version=self.version, metadata=self.meta,
                               layers=tuple(layers), arrays=self.arrays)

