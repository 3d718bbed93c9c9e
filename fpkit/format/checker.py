"""The checks of formats/SPEC.md section 10, in its order, on one open file.

:class:`FileChecker` opens a file read-only without locks, checks the root attributes, parses and
validates the metadata (:class:`~fpkit.format.metadata.Metadata`), derives every expected dataset
from :mod:`fpkit.format.layout` and compares the file against it before allocating any table,
then loads the tables and checks their digests (:mod:`fpkit.format.digests`).
:mod:`fpkit.format.reader` turns the result into a :class:`~fpkit.format.reader.FingerprintFile`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import (
    CorruptFileError,
    FormatError,
    FpkitFileNotFoundError,
    FpkitPermissionError,
    IncompleteFileError,
    UnknownFieldError,
    UnsupportedVersionError,
)
from . import checks, codecs, layout
from ._heap import global_heap_problem
from ._validate import SchemaViolation, validate
from .digests import labels_sha256, order_sha256, projection_sha256, table_sha256
from .layout import DatasetLayout, FileShape
from .metadata import Metadata
from .spec import (
    ATTR_COMPLETE,
    ATTR_FORMAT,
    ATTR_METADATA,
    ATTR_VERSION,
    CLASS_COUNTS,
    FORMAT_NAME,
    LABELS,
    SAMPLE_DIGESTS,
    SUPPORTED_MAJOR,
)

_ATTRS = {ATTR_FORMAT, ATTR_VERSION, ATTR_METADATA, ATTR_COMPLETE}
_VERSION_RE = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", re.ASCII)  # no leading zeros (errata)


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


def _link_kind(link) -> str:
    """What a link that is not a hard link is, in words (h5py gives None for a damaged one)."""
    if isinstance(link, h5py.SoftLink):
        return "a soft link"
    if isinstance(link, h5py.ExternalLink):
        return "an external link"
    return "an object of unknown kind (a damaged or unsupported link)"


class FileChecker:
    """One file being checked: :meth:`structure`, then :meth:`load`, then :meth:`close`.

    After :meth:`structure`: ``version`` ("MAJOR.MINOR"), ``meta`` (:class:`Metadata`).
    After :meth:`load`: ``arrays`` (dataset path -> numpy array as stored).

    Raises (from the constructor): FpkitFileNotFoundError, FpkitPermissionError, FormatError,
    CorruptFileError.
    """

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
            raise FormatError(
                f"{self.path} is not an HDF5 file, so not an fpkit fingerprint file; "
                "give a file written by `fpkit build`"
            )
        bad_heap = global_heap_problem(self.path)
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
            raise FormatError(
                f"{self.path}: root attribute {name!r} is not a variable-length UTF-8 string "
                "as the format requires; this is not a fingerprint file fpkit wrote"
            )
        if isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorruptFileError(f"{self.path}: root attribute {name!r} is not valid UTF-8") from e
        if not isinstance(v, str):  # an array, number or opaque value: comparing it would raise
            raise FormatError(
                f"{self.path}: root attribute {name!r} is a {type(v).__name__}, not a string; "
                "this is not a fingerprint file fpkit wrote"
            )
        try:  # h5py decodes invalid UTF-8 into lone surrogates, which cannot be hashed
            v.encode("utf-8")
        except UnicodeEncodeError as e:
            raise CorruptFileError(
                f"{self.path}: root attribute {name!r} is not valid UTF-8; the file is damaged: download or rebuild it"
            ) from e
        return v

    def structure(self, max_bytes: int | None) -> None:
        """Steps 2 to 6 of section 10: attributes, metadata, expected datasets, names, storage.

        Raises:
            FormatError, UnsupportedVersionError, UnknownFieldError, IncompleteFileError, CorruptFileError.
        """
        p = self.path
        fmt = self._attr(ATTR_FORMAT)
        if fmt != FORMAT_NAME:
            raise FormatError(
                f"{p} is an HDF5 file but not an fpkit fingerprint file "
                f"(root attribute 'format' is {fmt!r}, expected {FORMAT_NAME!r})"
            )
        version = self._attr(ATTR_VERSION)
        if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
            raise FormatError(f"{p}: format_version {version!r} is not MAJOR.MINOR (integers, no leading zeros)")
        major, minor = (int(x) for x in version.split("."))
        if major != SUPPORTED_MAJOR:
            raise UnsupportedVersionError(
                f"{p} uses fingerprint format {version}; this fpkit reads major version "
                f"{SUPPORTED_MAJOR} only; upgrade fpkit (pip install -U fpkit)"
            )
        self.version = f"{major}.{minor}"
        if problem := checks.userblock_problem(self.f):
            raise FormatError(f"{p}: {problem}; this is not a file fpkit wrote")
        complete = self._attr(ATTR_COMPLETE)
        if complete is None:
            raise IncompleteFileError(
                f"{p} was never finished (no completion marker): its write was "
                "interrupted; rebuild it, or continue with `fpkit build --resume`"
            )
        text = self._attr(ATTR_METADATA)
        if not isinstance(text, str):
            raise FormatError(f"{p}: the metadata attribute is missing")
        if hashlib.sha256(text.encode()).hexdigest() != complete:
            raise CorruptFileError(
                f"{p}: the metadata does not match its digest; the file is damaged: download or rebuild it"
            )
        try:
            unknown_attrs = sorted(set(self.f.attrs.keys()) - _ATTRS)
        except (OSError, RuntimeError, KeyError, ValueError) as e:  # ValueError: names not UTF-8
            raise CorruptFileError(f"{p}: the root attributes cannot be listed ({e}); the file is damaged") from e
        if unknown_attrs:  # an attribute cannot carry a must_understand marker: never ignorable
            raise UnknownFieldError(
                f"{p}: unknown root attributes {unknown_attrs[:5]} (not in format "
                f"{self.version}); a newer fpkit may understand this file"
            )
        try:
            doc = strict_json_loads(text)
        except ValueError as e:  # json.JSONDecodeError is a ValueError
            raise FormatError(f"{p}: the metadata is not valid JSON ({e})") from e
        try:
            validate(doc)
        except SchemaViolation as e:
            cls = UnknownFieldError if e.unknown_field else FormatError
            raise cls(
                f"{p}: metadata {e}; this file does not follow format {self.version}"
                + ("; a newer fpkit may understand it" if e.unknown_field else "")
            ) from e
        self.meta = Metadata.from_json(doc)
        self._expected = self._expected_datasets(self.meta)
        if problem := checks.metadata_problem(self.meta) or checks.version_problem(self.version, self.meta):
            raise FormatError(f"{p}: {problem}; this file does not follow format {self.version}")
        self._check_listed(max_bytes)
        self._check_objects()

    def _expected_datasets(self, meta: Metadata) -> dict[str, DatasetLayout]:
        """Every dataset the metadata implies (sections 3-4), checking the metadata's own paths."""
        p = self.path
        ds = meta.dataset
        n, c = ds.num_samples, ds.num_classes
        if len(ds.classes) != c:
            raise FormatError(f"{p}: {len(ds.classes)} class names for num_classes={c}")
        views = meta.views
        want_k = layout.views_per_sample(views.policy, views.count)
        if views.per_sample != want_k:
            raise FormatError(
                f"{p}: views.per_sample is {views.per_sample} but views.count "
                f"{views.count!r} with this policy means {want_k}"
            )
        k = views.per_sample if views.replay else None
        fs = FileShape(n=n, c=c, k=k, dtype=meta.storage.dtype, policy=views.policy["name"])
        expected = {d.path: d for d in layout.fixed_datasets(fs)}
        for i, lay in enumerate(meta.layers):
            g = layout.layer_group(i)
            if lay.group != g:
                raise FormatError(f"{p}: layer {i} has group {lay.group!r}, expected {g!r}")
            pr = lay.projection
            if pr.stored:
                d = layout.projection_dataset(i, lay.d, pr.r)
                expected[d.path] = d
            elif pr.seed is not None:
                raise FormatError(f"{p}: layer {lay.name} is redacted but records a seed")
            if pr.stored and pr.seed is None:
                raise FormatError(f"{p}: layer {lay.name} stores R but records no seed (null is for redacted layers)")
            if "views" in lay.tables and not k:
                raise FormatError(f"{p}: layer {lay.name} has a views table but views.replay is false")
            for kind, info in lay.tables.items():
                table, *scale = layout.table_datasets(i, kind, pr.r, fs)
                if info.dataset != table.path:
                    raise FormatError(f"{p}: table {kind} of layer {i} points to {info.dataset!r}")
                expected[table.path] = table
                want_scale = scale[0].path if scale else None
                if info.scale != want_scale:
                    raise FormatError(f"{p}: table {info.dataset} has scale {info.scale!r}, expected {want_scale!r}")
                expected.update((d.path, d) for d in scale)
        names = [lay.name for lay in meta.layers]
        if len(set(names)) != len(names):
            raise FormatError(f"{p}: layer names repeat: {names}")
        return expected

    def _check_listed(self, max_bytes: int | None) -> None:
        """``datasets`` lists exactly the expected datasets, shapes and dtypes; sizes are plausible."""
        p, expected = self.path, self._expected
        listed = self.meta.datasets
        if set(listed) != set(expected):
            missing = sorted(set(expected) - set(listed))
            extra = sorted(set(listed) - set(expected))
            raise FormatError(
                f"{p}: the dataset list does not fit the metadata (missing {missing}, unexpected {extra})"
            )
        total = 0
        for path, want in expected.items():
            info = listed[path]
            if info.shape != want.shape or info.dtype != want.dtype:
                raise FormatError(
                    f"{p}: {path} is listed as {info.dtype}{list(info.shape)}, expected {want.dtype}{list(want.shape)}"
                )
            total += want.nbytes
        if self.meta.storage.codec == "none" and total > os.path.getsize(p):
            raise CorruptFileError(
                f"{p}: the metadata claims {total} bytes of tables but the file has "
                f"{os.path.getsize(p)}; the file is truncated or damaged"
            )
        if max_bytes is not None and total > max_bytes:
            raise FormatError(f"{p}: tables need {total} bytes, more than the limit of {max_bytes}")

    def _check_objects(self) -> None:
        """Every link name is known or ignorable, no link is soft or external, and every expected
        dataset is there with its shape, dtype, chunking and filters."""
        p, expected = self.path, self._expected
        groups = {layout.layer_group(i) for i in range(len(self.meta.layers))}
        # every link name must be known, or name an object marked ignorable; the walk meets every
        # link on the way to every expected dataset, so no soft or external link is followed below
        unknown, links = self._unknown_names(set(expected), {layout.LAYERS_GROUP} | groups)
        if links:
            raise FormatError(
                f"{p}: {links[0][0]} is {links[0][1]}, not an object stored in the file; fpkit does not follow links"
            )
        if unknown:
            raise UnknownFieldError(
                f"{p}: unknown objects {unknown[:5]} (not in format {self.version} and not "
                "marked must_understand=false); a newer fpkit may understand this file"
            )
        for path, want in expected.items():
            shape, dt = want.shape, want.dtype
            try:
                d = self.f[path]
                ok = isinstance(d, h5py.Dataset) and d.shape == shape and d.dtype == np.dtype(dt)
            except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
                raise CorruptFileError(f"{p}: dataset {path} cannot be opened ({e}); the file is damaged") from e
            if not ok:
                got = (
                    f"{d.dtype}{list(d.shape) if d.shape is not None else ' (empty)'}"
                    if isinstance(d, h5py.Dataset)
                    else type(d).__name__
                )
                raise FormatError(f"{p}: dataset {path} is {got}, expected {dt}{list(shape)}")
            self._check_storage(want, d)

    def _unknown_names(self, expected: set[str], groups: set[str]) -> tuple[list[str], list[tuple[str, str]]]:
        """Walk every link name from the root, descending only into the format's own groups.
        Returns the unknown names that are not marked ignorable, and the soft/external links met
        (a link cannot carry a marker; a second name for a known object is unknown too, marked or
        not, and so is one inside a marked group)."""
        unknown: list[str] = []
        links: list[tuple[str, str]] = []
        todo = [""]
        try:
            known = {self.f["/"].id}  # the objects of the format: a marked name for one is unknown
            marked: list[tuple[str, Any]] = []
            while todo:
                prefix = todo.pop()
                g = self.f[prefix] if prefix else self.f
                for key in g.keys():
                    if isinstance(key, bytes):  # h5py hands over names that are not UTF-8 as bytes
                        key = key.decode("utf-8", "backslashreplace")
                    name = f"{prefix}/{key}" if prefix else key
                    link = g.get(key, getlink=True)
                    if not isinstance(link, h5py.HardLink):
                        links.append((name, _link_kind(link)))
                    elif name in groups or name in expected:
                        known.add(g[key].id)
                        todo += [name] if name in groups else []
                    elif checks.marked_ignorable(obj := g[key]):
                        marked.append((name, obj))
                    else:
                        unknown.append(name)
            unknown += [name for name, obj in marked if obj.id in known]
            unknown += checks.aliases_in_marked([(n, o) for n, o in marked if isinstance(o, h5py.Group)], known)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:  # ValueError: names not UTF-8
            raise CorruptFileError(
                f"{self.path}: the HDF5 structure cannot be walked ({e}); the file is damaged"
            ) from e
        return sorted(unknown), links

    def _check_storage(self, want: DatasetLayout, d: h5py.Dataset) -> None:
        """Refuse a dataset whose bytes live outside this file (external raw storage, virtual), or
        whose chunking or filters are not those of section 9."""
        p, path = self.path, want.path
        try:
            dcpl = d.id.get_create_plist()
            kind = dcpl.get_layout()
            external = dcpl.get_external_count()
        except (KeyError, OSError, RuntimeError, ValueError, TypeError) as e:
            raise CorruptFileError(f"{p}: dataset {path} cannot be opened ({e}); the file is damaged") from e
        if kind == h5py.h5d.VIRTUAL or external:
            what = "a virtual dataset" if kind == h5py.h5d.VIRTUAL else "stored in external files"
            raise FormatError(f"{p}: dataset {path} is {what}; fpkit reads only data stored inside the file")
        st = self.meta.storage
        want_chunks = want.chunks(st.chunk_rows, self.meta.views.per_sample)
        try:
            filters = tuple(dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters()))
        except (OSError, RuntimeError, ValueError) as e:
            raise CorruptFileError(f"{p}: dataset {path} cannot be opened ({e}); the file is damaged") from e
        want_filters = codecs.FILTER_PIPELINES[st.codec]
        if d.chunks != want_chunks or filters != want_filters:
            raise FormatError(
                f"{p}: dataset {path} is stored with chunks {d.chunks} and HDF5 filters {list(filters)}; "
                f"storage {st.codec}/chunk_rows {st.chunk_rows} means chunks {want_chunks} and "
                f"filters {list(want_filters)} (section 9 of the format)"
            )
        if problem := checks.storage_problem(d, want_chunks):
            raise CorruptFileError(f"{p}: dataset {path} {problem}; the file is damaged or unfinished: rebuild it")

    def load(self, verify: bool, load_views: bool, problems: list[str] | None) -> None:
        """Read the tables (all, or all but the per-view ones) and check their digests.

        Args:
            verify: compare every table's SHA-256 with the metadata.
            load_views: also read the per-view datasets.
            problems: collect content problems here instead of raising the first.
        Raises:
            CorruptFileError: a checksum or digest does not match (when ``problems`` is None).
        """
        codec = self.meta.storage.codec
        self.arrays: dict[str, np.ndarray] = {}
        for path in sorted(self._expected):
            if not load_views and self._expected[path].per_view:
                continue
            try:
                arr = codecs.read_table(self.f[path], codec)
                if verify and table_sha256(arr) != self.meta.datasets[path].sha256:
                    raise CorruptFileError(
                        f"{self.path}: table {path} does not match its SHA-256 "
                        "(content changed after writing); download or rebuild the file"
                    )
            except CorruptFileError as e:
                if problems is None:
                    raise
                problems.append(str(e))
                continue
            self.arrays[path] = arr
        for msg in self._content_problems():
            err = CorruptFileError(f"{self.path}: {msg}; the file is damaged or was edited")
            if problems is None:
                raise err
            problems.append(str(err))

    def _content_problems(self) -> list[str]:
        """The labels, sample digests and projections that do not match the metadata's digests."""
        ds = self.meta.dataset
        checks = []
        if LABELS in self.arrays:
            lab = self.arrays[LABELS]
            if lab.size and (lab.min() < 0 or lab.max() >= ds.num_classes):
                checks.append(f"labels outside [0, {ds.num_classes})")
            elif labels_sha256(lab) != ds.labels_sha256:
                checks.append("labels do not match dataset.labels_sha256")
            elif CLASS_COUNTS in self.arrays and not np.array_equal(
                np.bincount(lab, minlength=ds.num_classes), self.arrays[CLASS_COUNTS]
            ):
                checks.append("class_counts do not match the labels")
        if SAMPLE_DIGESTS in self.arrays and order_sha256(self.arrays[SAMPLE_DIGESTS]) != ds.order_sha256:
            checks.append("sample digests do not match dataset.order_sha256")
        for i, lay in enumerate(self.meta.layers):
            key = layout.projection_path(i)
            if key in self.arrays and projection_sha256(self.arrays[key]) != lay.projection.sha256:
                checks.append(f"projection of layer {lay.name} does not match its SHA-256")
        return checks


__all__ = ["FileChecker", "strict_json_loads"]
