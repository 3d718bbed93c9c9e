"""Conformance cases of the errata to format 1.0 (2026-12, formats/SPEC.md): one per gap the spec
left open (issue 11, "The spec's own gaps").  Each case derives a file from a golden one and says
whether a reader accepts or refuses it.  The weights digest of a teacher saved with a trainer's key
prefix (``module.``) is covered in tests/teachers/test_checkpoint.py."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import _helpers as H
import h5py
import numpy as np
import pytest
from test_reader import expect

from fpkit.errors import ConfigError, CorruptFileError, FormatError, UnknownFieldError
from fpkit.format import Normalization, open_fingerprints
from fpkit.testing import ExampleFile, example_dataset, write_example_file, write_rows

F16 = H.GOLDEN / "v1-float16-none.h5"
I8 = H.GOLDEN / "v1-int8-zstd.h5"
F32 = H.GOLDEN / "v1-float32-gzip-replay-redacted.h5"


def copy(src: Path, tmp_path: Path) -> Path:
    return Path(shutil.copy(src, tmp_path / "fp.h5"))


def rebuild_dataset(path: Path, name: str, *, drop_last_chunk=False, dtype=None, dcpl_edit=None) -> None:
    """Replace dataset ``name`` by a copy with the same creation properties (edited by
    ``dcpl_edit``), holding the same chunks, byte for byte, but the last one when ``drop_last_chunk``
    (a writer killed before that chunk); with ``dtype`` the values are rewritten in that dtype."""
    with h5py.File(path, "r+") as f:
        old = f[name]
        dcpl = old.id.get_create_plist()
        if dcpl_edit:
            dcpl_edit(dcpl)
        tid = h5py.h5t.py_create(np.dtype(dtype)) if dtype else old.id.get_type()
        new = h5py.Dataset(h5py.h5d.create(f.id, b"tmp", tid, old.id.get_space(), dcpl=dcpl))
        if dtype:
            new[()] = old[()].astype(dtype)
        else:
            n, rows = old.shape[0], old.chunks[0]
            starts = list(range(0, n, rows))
            for start in starts[:-1] if drop_last_chunk else starts:
                coord = (start,) + (0,) * (old.ndim - 1)
                mask, raw = old.id.read_direct_chunk(coord)
                new.id.write_direct_chunk(coord, raw, filter_mask=mask)
        del f[name]
        f.move("tmp", name)


# ----------------------------------------------------------------------------- replay and per-view tables


def test_replay_layer_without_its_views_table_is_refused(tmp_path):
    path = copy(F32, tmp_path)
    meta = H.get_metadata(path)
    del meta["layers"][0]["tables"]["views"], meta["datasets"]["layers/0/views"]
    H.set_metadata(path, meta)
    with h5py.File(path, "r+") as f:
        del f["layers/0/views"]
    assert "no views table" in str(expect(path, FormatError))


# ----------------------------------------------------------------------------- chunks never written


@pytest.mark.parametrize("src", [F16, I8, F32], ids=["none", "zstd", "gzip"])
@pytest.mark.parametrize("verify", [True, False])
def test_a_chunk_never_written_is_refused_on_every_open(tmp_path, src, verify):
    path = copy(src, tmp_path)
    name = "layers/0/views" if src == F32 else "layers/0/sample"
    rebuild_dataset(path, name, drop_last_chunk=True)
    with h5py.File(path, "r") as f:  # HDF5 itself reads the missing chunk as zeros, silently
        if src != I8:
            assert not f[name][-1].any()
    with pytest.raises(CorruptFileError, match="chunks stored"):
        open_fingerprints(path, verify=verify)
    expect(path, CorruptFileError)


def test_the_copy_with_every_chunk_is_read(tmp_path):
    path = copy(F16, tmp_path)
    rebuild_dataset(path, "layers/0/sample")  # the same helper, all chunks: accepted
    open_fingerprints(path)


def test_chunks_allocated_up_front_are_refused(tmp_path):
    path = copy(F16, tmp_path)
    rebuild_dataset(path, "layers/0/sample", dcpl_edit=lambda p: p.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY))
    assert "allocated incrementally" in str(expect(path, CorruptFileError))


# ----------------------------------------------------------------------------- the must_understand marker


def _enum(base, members):
    t = h5py.h5t.enum_create(base)
    for name, value in members:
        t.enum_insert(name, value)
    return t


def _set_marker(obj, tid, value, shape=None) -> None:
    space = h5py.h5s.create_simple(shape) if shape else h5py.h5s.create(h5py.h5s.SCALAR)
    a = h5py.h5a.create(obj.id, b"must_understand", tid, space)
    a.write(np.full(shape or (), value, dtype=tid.get_super().dtype if tid.get_class() == h5py.h5t.ENUM else None))


BOOL_I8 = [(b"FALSE", 0), (b"TRUE", 1)]


@pytest.mark.parametrize(
    "tid, value, shape, ok",
    [
        (lambda: _enum(h5py.h5t.STD_I8LE, BOOL_I8), 0, None, True),  # what h5py writes for False
        (lambda: _enum(h5py.h5t.STD_U8LE, BOOL_I8), 0, None, True),  # any integer base
        (lambda: _enum(h5py.h5t.STD_I16BE, BOOL_I8[::-1]), 0, None, True),  # members in any order
        (lambda: _enum(h5py.h5t.STD_I8LE, BOOL_I8), 1, None, False),  # TRUE
        (lambda: _enum(h5py.h5t.STD_I8LE, BOOL_I8), 0, (1,), False),  # an array of one
        (lambda: _enum(h5py.h5t.STD_I8LE, [(b"false", 0), (b"true", 1)]), 0, None, False),  # names
        (lambda: _enum(h5py.h5t.STD_I8LE, [(b"FALSE", 0), (b"TRUE", 1), (b"X", 2)]), 0, None, False),
        (lambda: h5py.h5t.STD_I8LE.copy(), 0, None, False),  # the integer 0
        (lambda: h5py.h5t.STD_U8LE.copy(), 0, None, False),  # HDF5's native hbool_t is an unsigned int
    ],
)
def test_marker_encoding(tmp_path, tid, value, shape, ok):
    path = copy(F16, tmp_path)
    with h5py.File(path, "r+") as f:
        _set_marker(f.create_group("future"), tid(), value, shape)
    if ok:
        open_fingerprints(path)
    else:
        expect(path, UnknownFieldError)


def test_marker_as_a_string_is_no_marker(tmp_path):
    path = copy(F16, tmp_path)
    with h5py.File(path, "r+") as f:
        f.create_group("future").attrs["must_understand"] = "false"
    expect(path, UnknownFieldError)


# ----------------------------------------------------------------------------- second names inside marked objects


@pytest.mark.parametrize("where", ["future", "future/deeper", "layers/future"])
def test_marked_group_may_not_hold_a_second_name_for_a_known_object(tmp_path, where):
    path = copy(F16, tmp_path)
    with h5py.File(path, "r+") as f:
        g = f.create_group("layers/future" if where.startswith("layers") else "future")
        g.attrs["must_understand"] = False
        inner = g.create_group("deeper") if where == "future/deeper" else g
        inner["alias"] = f["layers/0/sample"]
    e = expect(path, UnknownFieldError)
    assert "alias" in str(e)


@pytest.mark.parametrize("target", ["labels", "layers", "layers/0", "/"])
def test_marked_second_name_of_a_known_object_is_refused(tmp_path, target):
    path = copy(F16, tmp_path)
    with h5py.File(path, "r+") as f:
        if target == "/":
            g = f.create_group("future")
            g.attrs["must_understand"] = False
            g["root_again"] = f["/"]  # a cycle back to the root
        else:
            f["alias"] = f[target]
            f["alias"].attrs["must_understand"] = False  # marks the known object too: one object
    expect(path, UnknownFieldError)


def test_marked_group_with_its_own_objects_and_a_cycle_is_ignored(tmp_path):
    path = copy(F16, tmp_path)
    with h5py.File(path, "r+") as f:
        g = f.create_group("future")
        g.attrs["must_understand"] = False
        g.create_dataset("data", data=np.arange(3))
        g["self"] = g  # a hard link back to the marked group itself
        g["soft"] = h5py.SoftLink("/labels")  # never followed: the group is ignored
    open_fingerprints(path)


# ----------------------------------------------------------------------------- attributes below the root


def test_unknown_attributes_below_the_root_are_ignored(tmp_path):
    path = copy(F16, tmp_path)
    with h5py.File(path, "r+") as f:
        f["layers"].attrs["note"] = "a group's attribute"
        f["layers/0"].attrs["units"] = np.arange(3)
        f["layers/0/sample"].attrs["description"] = "descriptive, as a later minor version may add"
        f["labels"].attrs["must_understand"] = True  # on a known object the marker changes nothing
    fp = open_fingerprints(path)
    assert fp.table("sample").shape == (12, 8)


# ----------------------------------------------------------------------------- metadata rules


def _edit(tmp_path, change) -> Path:
    path = copy(F16, tmp_path)
    meta = H.get_metadata(path)
    change(meta)
    H.set_metadata(path, meta)
    return path


@pytest.mark.parametrize(
    "mean, std", [([0.5, 0.5], [0.25, 0.25, 0.25]), ([0.5] * 3, [0.25] * 2), ([0.5] * 4, [0.25] * 4)]
)
def test_normalisation_needs_one_constant_per_channel(tmp_path, mean, std):
    path = _edit(tmp_path, lambda m: m["dataset"].update(normalize={"mean": mean, "std": std}))
    assert "per channel" in str(expect(path, FormatError))


def test_writer_refuses_normalisation_of_another_channel_count(tmp_path):
    data = write_example_file(tmp_path / "a.h5")
    two = example_dataset(normalize=Normalization(mean=(0.5, 0.5), std=(0.25, 0.25)))
    with pytest.raises(ConfigError, match="per channel"):
        write_rows(tmp_path / "b.h5", replace(data.contents, dataset=two), data.rows)
    assert not (tmp_path / "b.h5").exists()


@pytest.mark.parametrize(
    "created, ok",
    [
        ("2026-13-45T99:99:99Z", False),
        ("2026-02-29T00:00:00Z", False),  # not a leap year
        ("2026-01-01T24:00:00Z", False),
        ("2026-01-01T23:59:60Z", False),  # no leap second
        ("0000-01-01T00:00:00Z", False),
        ("2028-02-29T23:59:59Z", True),
    ],
)
def test_created_must_be_a_real_utc_time(tmp_path, created, ok):
    path = _edit(tmp_path, lambda m: m.update(created=created))
    if ok:
        assert open_fingerprints(path).metadata.provenance.created == created
    else:
        assert "created" in str(expect(path, FormatError))


@pytest.mark.parametrize("count", [95, 12, 8, 960])
def test_accuracy_count_is_n_times_k(tmp_path, count):
    path = _edit(tmp_path, lambda m: m["teacher"]["accuracy"].update(count=count))
    assert "N x K" in str(expect(path, FormatError))


@pytest.mark.parametrize("version, ok", [("01.0", False), ("1.00", False), ("01.7", False), ("1.10", True)])
def test_version_without_leading_zeros(tmp_path, version, ok):
    path = copy(F16, tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = version
    if ok:
        assert open_fingerprints(path).format_version == version
    else:
        expect(path, FormatError)


# ----------------------------------------------------------------------------- container and storage


def test_user_block_is_refused(tmp_path):
    path = tmp_path / "fp.h5"
    with h5py.File(F16, "r") as src, h5py.File(path, "w", userblock_size=512, track_order=False) as dst:
        for name in src:
            src.copy(src[name], dst, name=name)
        for name in ("format", "format_version", "metadata", "complete"):
            dst.attrs[name] = src.attrs[name]
    assert "user block" in str(expect(path, FormatError))


def test_big_endian_floats_are_refused(tmp_path):
    path = copy(F16, tmp_path)
    rebuild_dataset(path, "layers/0/sample", dtype=">f2")
    assert ">f2" in str(expect(path, FormatError))


def test_optional_fletcher32_is_refused(tmp_path):
    def optional_checksum(dcpl):
        dcpl.remove_filter(h5py.h5z.FILTER_FLETCHER32)
        dcpl.set_filter(h5py.h5z.FILTER_FLETCHER32, h5py.h5z.FLAG_OPTIONAL)

    path = copy(F16, tmp_path)
    rebuild_dataset(path, "labels", dcpl_edit=optional_checksum)
    assert "fletcher32" in str(expect(path, CorruptFileError))


@pytest.mark.parametrize(
    "src, flags",
    [
        (F16, [(h5py.h5z.FILTER_FLETCHER32, 0)]),
        (F32, [(h5py.h5z.FILTER_SHUFFLE, 1), (h5py.h5z.FILTER_DEFLATE, 1), (h5py.h5z.FILTER_FLETCHER32, 0)]),
        (I8, [(h5py.h5z.FILTER_SHUFFLE, 1), (32015, 1)]),
    ],
    ids=["none", "gzip", "zstd"],
)
def test_filter_flags_are_as_documented(src, flags):
    with h5py.File(src, "r") as f:
        for name in json.loads(f.attrs["metadata"])["datasets"]:
            dcpl = f[name].id.get_create_plist()
            got = [dcpl.get_filter(i)[:2] for i in range(dcpl.get_nfilters())]
            assert [(c, fl & h5py.h5z.FLAG_OPTIONAL) for c, fl in got] == flags, name


# ----------------------------------------------------------------------------- per-sample mean


def test_sample_rows_need_not_be_the_bitwise_mean_of_the_view_rows(tmp_path):
    spec = ExampleFile(replay=3, dtype="float32", n=40, r=16)
    views = {"layer1": H.rows_for(spec.n, spec.r, 0, 3)}
    rows = {"layer1": views["layer1"].astype(np.float64).mean(axis=1).astype(np.float32)}
    data = write_example_file(tmp_path / "fp.h5", spec, rows=rows, views=views)
    fp = open_fingerprints(data.path)
    naive = fp.table("views").mean(axis=1, dtype=np.float32)
    assert np.array_equal(fp.table("sample"), rows["layer1"])
    assert np.allclose(fp.table("sample"), naive, rtol=0, atol=1e-6)
