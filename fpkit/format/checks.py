"""The reader checks of the 1.0 errata (formats/SPEC.md, "Errata to 1.0 (2026-12)").

:class:`~fpkit.format.checker.FileChecker` calls these: the encoding of the ``must_understand``
marker, the metadata rules the schema cannot express (replay tables in every layer, one
normalisation constant per channel, a real ``created`` date, ``teacher.accuracy.count`` = N x K,
and format 1.1's ``dataset.subset`` range),
no user block, and per dataset: every chunk allocated, incremental allocation, fletcher32
mandatory.  Each function returns a problem in words (None when there is none); the checker
chooses the error class.
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

import h5py
import numpy as np

from .metadata import Metadata

MARKER = "must_understand"
_BOOL_MEMBERS = {b"FALSE": 0, b"TRUE": 1}


def marked_ignorable(obj: Any) -> bool:
    """True if an HDF5 object carries ``must_understand`` = false as SPEC section 2 encodes it: a
    scalar attribute of an enumeration with exactly the members FALSE = 0 and TRUE = 1 (h5py's
    boolean; any integer base) holding FALSE.  Anything else (0, an array, a string) is no marker."""
    try:
        if MARKER not in obj.attrs:
            return False
        aid = obj.attrs.get_id(MARKER)
        if aid.get_space().get_simple_extent_type() != h5py.h5s.SCALAR:
            return False
        t = aid.get_type()
        if t.get_class() != h5py.h5t.ENUM or t.get_nmembers() != 2:
            return False
        if {t.get_member_name(i): t.get_member_value(i) for i in range(2)} != _BOOL_MEMBERS:
            return False
        v = obj.attrs[MARKER]
    except Exception:
        return False
    return isinstance(v, (bool, np.bool_)) and not bool(v)


def valid_created(text: str) -> bool:
    """``YYYY-MM-DDTHH:MM:SSZ`` naming a real UTC date and time of day (seconds 00-59)."""
    try:
        _dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return len(text) == 20


def metadata_problem(meta: Metadata) -> str | None:
    """The first metadata rule of the errata that ``meta`` breaks (beyond the schema), or None."""
    if not valid_created(meta.provenance.created):
        return f"created {meta.provenance.created!r} is not a valid UTC date and time (YYYY-MM-DDTHH:MM:SSZ)"
    ds = meta.dataset
    if problem := views_problem(meta):
        return problem
    channels = ds.image_shape[2]
    norm = ds.normalize
    if len(norm.mean) != channels or len(norm.std) != channels:
        return (
            f"dataset.normalize has {len(norm.mean)} means and {len(norm.std)} stds for "
            f"{channels} channels (image_shape {list(ds.image_shape)}); there must be one per channel"
        )
    acc = meta.teacher.accuracy
    want = ds.num_samples * meta.views.per_sample
    if acc is not None and acc.count != want:
        return f"teacher.accuracy.count is {acc.count}, but N x K = {ds.num_samples} x {meta.views.per_sample} = {want}"
    if problem := subset_problem(ds.subset, ds.num_samples):
        return problem
    if meta.views.replay:
        for lay in meta.layers:
            if "views" not in lay.tables:
                return f"layer {lay.name} has no views table although views.replay is true (every layer needs one)"
    return None


def subset_problem(subset: Any, num_samples: int | None) -> str | None:
    """Format 1.1's ``dataset.subset``: ``start < stop <= source_num_samples`` and
    ``stop - start = num_samples`` (None when there is no subset)."""
    if subset is None:
        return None
    a, b, total = subset.start, subset.stop, subset.source_num_samples
    if not a < b <= total:
        return (
            f"dataset.subset is samples {a}:{b} of a source of {total}; it must satisfy "
            "start < stop <= source_num_samples"
        )
    if num_samples is not None and b - a != num_samples:
        return f"dataset.subset {a}:{b} holds {b - a} samples but dataset.num_samples is {num_samples}"
    return None


def userblock_problem(f: h5py.File) -> str | None:
    """A user block (bytes before the HDF5 superblock) is not allowed."""
    size = f.userblock_size
    return f"the file has a user block of {size} bytes; the format allows none" if size else None


def storage_problem(d: h5py.Dataset, want_chunks: tuple[int, ...]) -> str | None:
    """Every chunk of a row-chunked dataset is allocated, allocation is incremental (so allocated
    means written) and fletcher32, where present, is mandatory; else the problem in words."""
    try:
        dcpl = d.id.get_create_plist()
        alloc, got = dcpl.get_alloc_time(), d.id.get_num_chunks()
        flags = [dcpl.get_filter(i)[:2] for i in range(dcpl.get_nfilters())]
    except (OSError, RuntimeError, ValueError) as e:
        return f"cannot be inspected ({e})"
    if alloc != h5py.h5d.ALLOC_TIME_INCR:
        return "is not allocated incrementally (HDF5 allocation time other than incremental)"
    if any(code == h5py.h5z.FILTER_FLETCHER32 and flag & h5py.h5z.FLAG_OPTIONAL for code, flag in flags):
        return "has its fletcher32 checksum marked optional; it must be mandatory"
    want = -(-d.shape[0] // want_chunks[0])
    if got != want:
        return f"has {got} of its {want} chunks stored: some rows were never written"
    return chunk_extent_problem(d, {code for code, _ in flags}, got)


# the least bytes a stored chunk can hold: fletcher32's checksum, and a zlib stream's header and trailer
_FLETCHER32_BYTES, _ZLIB_MIN_BYTES = 4, 8


def chunk_extent_problem(d: h5py.Dataset, filters: set[int], count: int) -> str | None:
    """Every stored chunk lies inside the file and is large enough for its filters (an
    uncompressed chunk is exactly its raw size plus the checksum).  libhdf5 does not check
    this before decoding: a damaged chunk size of a few bytes crashed it (fuzz case 7887, seed
    20261206, a bit flipped in a gzip file's chunk index)."""
    file_size = d.file.id.get_filesize()
    checksum = _FLETCHER32_BYTES if h5py.h5z.FILTER_FLETCHER32 in filters else 0
    compressed = bool(filters - {h5py.h5z.FILTER_FLETCHER32, h5py.h5z.FILTER_SHUFFLE})
    raw = int(np.prod(d.chunks)) * d.dtype.itemsize
    least = checksum + (_ZLIB_MIN_BYTES if h5py.h5z.FILTER_DEFLATE in filters else 1)
    for i in range(count):
        info = d.id.get_chunk_info(i)
        if info.byte_offset is None or info.byte_offset + info.size > file_size:
            return f"has chunk {i} stored beyond the end of the file"
        if not compressed and info.size != raw + checksum:
            return f"has chunk {i} of {info.size} bytes where {raw + checksum} are stored"
        if info.size < least:
            return f"has chunk {i} of {info.size} bytes, too few for its filters"
    return None


def aliases_in_marked(marked: list[tuple[str, h5py.Group]], known: set) -> list[str]:
    """Names inside the marked groups ``marked`` (name, group), at any depth, that are hard links
    to a known object (``known``: ObjectIDs of the root, the format's groups and expected
    datasets).  Soft and external links inside a marked group are not followed: the group is
    ignored, so they are never read."""
    found: list[str] = []
    seen: set = set()
    todo = list(marked)
    while todo:
        name, g = todo.pop()
        if g.id in seen:
            continue
        seen.add(g.id)
        for key in g.keys():
            if not isinstance(g.get(key, getlink=True), h5py.HardLink):
                continue
            child = g[key]
            shown = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key
            path = f"{name}/{shown}"
            if child.id in known:
                found.append(path)
            elif isinstance(child, h5py.Group):
                todo.append((path, child))
    return sorted(found)


__all__ = [
    "aliases_in_marked",
    "marked_ignorable",
    "metadata_problem",
    "storage_problem",
    "subset_problem",
    "userblock_problem",
    "valid_created",
]


def views_problem(meta: Metadata) -> str | None:
    """Format 1.2's rules on image sizes: ``image_shape`` H and W may be null (images of varied
    sizes) only with the resized_crop_flip and center policies; the channels never."""
    h, w, c = meta.dataset.image_shape
    if c is None:
        return "dataset.image_shape has null channels; only H and W may be null (format 1.2)"
    if (h is None or w is None) and meta.views.policy.get("name") == "pad_crop_flip":
        return "dataset.image_shape has null H or W, but pad_crop_flip views need images of one size"
    return None


def version_problem(version: str, meta: Metadata) -> str | None:
    """A feature newer than the file's format_version (a 1.2 view policy or null image sizes
    in a file that says 1.1): the file does not follow its own version."""
    from .layout import POLICY_VERSION, version_tuple

    name = meta.views.policy.get("name")
    need = POLICY_VERSION.get(name, "1.0")
    if None in meta.dataset.image_shape:
        need = max(need, "1.2", key=version_tuple)
    if version_tuple(version) < version_tuple(need):
        return f"views.policy {name} or a null image_shape needs format {need}, but the file says {version}"
    if "logits" in meta.extras and version_tuple(version) < (1, 3):
        return f"the field 'logits' (logit tables) needs format 1.3, but the file says {version}"
    return None
