"""FingerprintWriter: property-based round trips against independent references, atomic writing,
output checks, disk errors, streaming memory, metadata checks."""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import _helpers as H
import h5py
import numpy as np
import pytest
from _helpers import bits_equal, ref_class_means, ref_decoded, ref_int8, ref_min_cos
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpkit.errors import (
    ConfigError,
    FormatError,
    FpkitFileNotFoundError,
    FpkitPermissionError,
    MismatchError,
    NonFiniteError,
    OutputExistsError,
    StorageError,
)
from fpkit.format import (
    FileContents,
    FingerprintWriter,
    Normalization,
    StorageInfo,
    codecs,
    open_fingerprints,
    quantize,
    sample_digest,
    verify_fingerprints,
    writer,
)
from fpkit.format.spec import CODECS, DTYPES
from fpkit.testing import example_contents, example_dataset, example_teacher, example_views, fixed_provenance

# ----------------------------------------------------------------------------- round trips


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 40),
    c=st.integers(1, 5),
    r=st.integers(1, 12),
    chunk_rows=st.integers(1, 16),
    dtype=st.sampled_from(DTYPES),
    codec=st.sampled_from(CODECS),
    num_layers=st.integers(1, 3),
    tables=st.sampled_from([("sample",), ("class",), ("sample", "class")]),
    k=st.sampled_from([None, None, 1, 3]),
    batch=st.integers(1, 17),
    seed=st.integers(0, 2**16),
    zero_rows=st.booleans(),
)
def test_round_trip_matches_independent_references(
    n, c, r, chunk_rows, dtype, codec, num_layers, tables, k, batch, seed, zero_rows
):
    labels = np.random.default_rng(seed).integers(0, c, n)
    specs = H.layer_specs(num_layers, r)
    rows = {sp.name: H.rows_for(n, r, seed + i) for i, sp in enumerate(specs)}
    vws = {sp.name: H.rows_for(n, r, seed + 50 + i, k) for i, sp in enumerate(specs)} if k else None
    if zero_rows:
        for x in rows.values():
            x[::3] = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path, labels, rows, vws, vp = H.write(
            Path(tmp) / "fp.h5",
            n=n,
            c=c,
            r=r,
            num_layers=num_layers,
            dtype=dtype,
            codec=codec,
            chunk_rows=chunk_rows,
            tables=tables,
            k=k,
            labels=labels,
            rows=rows,
            vws=vws,
            batch=batch,
            seed=seed,
        )
        assert os.listdir(tmp) == ["fp.h5"]
        fp = open_fingerprints(path)
        assert verify_fingerprints(path) == []

    assert bits_equal(fp.labels, labels.astype(np.int64))
    assert bits_equal(fp.class_counts, np.bincount(labels, minlength=c).astype(np.int64))
    assert fp.sample_digests.dtype == np.uint64 and fp.sample_digests.shape == (n,)
    if k:
        assert bits_equal(fp.view_params, vp)
    else:
        assert fp.view_params is None
    assert fp.metadata.storage == StorageInfo(dtype=dtype, codec=codec, chunk_rows=chunk_rows)
    for i, sp in enumerate(specs):
        lay = fp.layer(sp.name)
        assert bits_equal(fp.projection(sp.name), sp.R)
        originals = {}
        if "sample" in tables:
            originals["sample"] = rows[sp.name]
        if "class" in tables:
            originals["class"] = ref_class_means(rows[sp.name], labels, c)
        if k:
            originals["views"] = vws[sp.name]
        assert set(lay.tables) == set(originals)
        for kind, orig in originals.items():
            got = fp.table(kind, sp.name)
            assert got.dtype == np.float32
            assert bits_equal(got, ref_decoded(orig, dtype)), (kind, dtype)
            if dtype == "int8":
                q, s = ref_int8(orig)
                assert bits_equal(fp.arrays[f"layers/{i}/{kind}"], q)
                assert bits_equal(fp.arrays[f"layers/{i}/{kind}_scale"], s)
            want = ref_min_cos(ref_decoded(orig, dtype), orig)
            assert abs(lay.fidelity[kind] - round(want, 9)) <= 1.01e-9
            if dtype == "float32":
                assert lay.fidelity[kind] == 1.0


def test_float16_fidelity_is_high_and_int8_lower(tmp_path):
    _, _, rows, _, _ = H.write(tmp_path / "a.h5", n=64, r=32, dtype="float16")
    fp16 = open_fingerprints(tmp_path / "a.h5")
    H.write(tmp_path / "b.h5", n=64, r=32, dtype="int8", rows=rows)
    fp8 = open_fingerprints(tmp_path / "b.h5")
    assert fp16.layer().fidelity["sample"] >= 0.99999
    assert 0.999 <= fp8.layer().fidelity["sample"] < fp16.layer().fidelity["sample"]


def test_quantize_encode_decode_rules():
    rows = np.array([[0.0, 0.0, 0.0], [1.0, -0.5, 0.25], [-3.0, 1.5, 0.0]], dtype=np.float32)
    q, s = quantize.encode(rows, "int8")
    assert q.dtype == np.int8 and s.dtype == np.float32
    assert s[0] == 0 and not q[0].any()
    assert q[1, 0] == 127 and q[2, 0] == -127 and q[2, 2] == 0
    half = np.array([[127.0, 0.5, 1.5, 2.5, -0.5]], dtype=np.float32)  # scale exactly 1
    assert quantize.encode(half, "int8")[0].tolist() == [[127, 0, 2, 2, 0]]  # round half to even
    assert bits_equal(q, ref_int8(rows)[0]) and bits_equal(s, ref_int8(rows)[1])
    assert quantize.min_row_cosine(np.zeros((2, 3)), np.zeros((2, 3))) == 1.0
    assert quantize.min_row_cosine(np.zeros((0, 3)), np.zeros((0, 3))) == 1.0
    with pytest.raises(ConfigError):
        quantize.encode(rows, "bfloat16")


def test_sample_digest_definition():
    import hashlib

    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    want = int.from_bytes(hashlib.sha256(img.tobytes()).digest()[:8], "little")
    assert sample_digest(img) == want
    assert sample_digest(img.astype(np.int64)) == want
    assert sample_digest(np.asfortranarray(img)) == want


def test_order_and_labels_digests(tmp_path):
    import hashlib

    path, labels, *_ = H.write(tmp_path / "fp.h5", n=7)
    fp = open_fingerprints(path)
    ds = fp.metadata.dataset
    assert ds.labels_sha256 == hashlib.sha256(labels.astype("<i8").tobytes()).hexdigest()
    assert ds.order_sha256 == hashlib.sha256(fp.sample_digests.astype("<u8").tobytes()).hexdigest()
    assert ds.num_samples == 7 and ds.num_classes == 3 and ds.classes == ("c0", "c1", "c2")


def test_table_digests_are_over_stored_little_endian_bytes(tmp_path):
    import hashlib

    path, *_ = H.write(tmp_path / "fp.h5", dtype="int8", codec="zstd")
    fp = open_fingerprints(path)
    for name, info in fp.metadata.datasets.items():
        arr = fp.arrays[name]
        assert str(arr.dtype) == info.dtype and arr.shape == info.shape
        le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        assert hashlib.sha256(le.tobytes()).hexdigest() == info.sha256


def test_empty_class_gets_zero_row(tmp_path):
    labels = np.array([0, 0, 2, 2, 2])
    path, _, rows, _, _ = H.write(tmp_path / "fp.h5", n=5, c=3, labels=labels, dtype="float32")
    fp = open_fingerprints(path)
    table = fp.table("class")
    assert not table[1].any()
    assert bits_equal(table, ref_class_means(rows["layer1"], labels, 3))
    assert fp.class_counts.tolist() == [2, 0, 3]


# ----------------------------------------------------------------------------- atomic writing


def test_exception_inside_with_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with FingerprintWriter(tmp_path / "fp.h5", _contents()) as w:
            w.append({"layer1": np.zeros((2, 8), np.float32)})
            assert any(p.name.startswith(".fp.h5.writing-") for p in tmp_path.iterdir())
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_nothing_visible_before_close(tmp_path):
    w = FingerprintWriter(tmp_path / "fp.h5", _contents())
    w.append({"layer1": np.zeros((10, 8), np.float32)})
    assert not (tmp_path / "fp.h5").exists()
    assert w.close() == tmp_path / "fp.h5"
    assert [p.name for p in tmp_path.iterdir()] == ["fp.h5"]
    w.close()  # idempotent


def test_close_with_missing_rows_fails_and_cleans_up(tmp_path):
    w = FingerprintWriter(tmp_path / "fp.h5", _contents())
    w.append({"layer1": np.zeros((4, 8), np.float32)})
    with pytest.raises(MismatchError, match="only 4 of 10"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_existing_output_refused_unless_overwrite(tmp_path):
    H.write(tmp_path / "fp.h5")
    before = (tmp_path / "fp.h5").read_bytes()
    with pytest.raises(OutputExistsError) as ei:
        H.write(tmp_path / "fp.h5")
    assert isinstance(ei.value, FileExistsError)
    assert (tmp_path / "fp.h5").read_bytes() == before
    H.write(tmp_path / "fp.h5", overwrite=True, dtype="float32")
    assert open_fingerprints(tmp_path / "fp.h5").metadata.storage.dtype == "float32"
    assert [p.name for p in tmp_path.iterdir()] == ["fp.h5"]


def test_output_is_a_folder(tmp_path):
    (tmp_path / "fp.h5").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        H.write(tmp_path / "fp.h5", overwrite=True)


def test_missing_output_folder(tmp_path):
    with pytest.raises(FpkitFileNotFoundError) as ei:
        H.write(tmp_path / "nope" / "fp.h5")
    assert isinstance(ei.value, FileNotFoundError)


def test_unwritable_output_folder(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o500)
    else:  # root bypasses permissions: simulate what os.access would say to a normal user
        real = os.access
        monkeypatch.setattr(
            os, "access", lambda p, mode, **kw: False if Path(p) == folder and mode & os.W_OK else real(p, mode, **kw)
        )
    try:
        with pytest.raises(FpkitPermissionError) as ei:
            H.write(folder / "fp.h5")
        assert isinstance(ei.value, PermissionError)
    finally:
        folder.chmod(0o700)
    assert list(folder.iterdir()) == []


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("when", ["init", "append", "close"])
def test_disk_full_is_storage_error_and_leaves_nothing(tmp_path, monkeypatch, when):
    if when == "init":
        monkeypatch.setattr(codecs, "write_chunk", _enospc)
    with pytest.raises(StorageError) as ei:
        with FingerprintWriter(tmp_path / "fp.h5", _contents(chunk_rows=4)) as w:
            if when == "append":
                monkeypatch.setattr(codecs, "write_chunk", _enospc)
            w.append({"layer1": np.zeros((10, 8), np.float32)})
            if when == "close":
                monkeypatch.setattr(codecs, "write_chunk", _enospc)
    assert isinstance(ei.value, OSError) and ei.value.errno == errno.ENOSPC
    assert "disk full" in str(ei.value)
    assert list(tmp_path.iterdir()) == []


def test_generic_io_error_during_rename_is_storage_error(tmp_path, monkeypatch):
    def fail(*_a, **_k):
        raise OSError(errno.EIO, "I/O error")

    w = FingerprintWriter(tmp_path / "fp.h5", _contents())
    w.append({"layer1": np.zeros((10, 8), np.float32)})
    monkeypatch.setattr(writer.os, "replace", fail)
    with pytest.raises(StorageError):
        w.close()
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_streaming_holds_one_chunk_per_table(tmp_path):
    n, chunk = 20000, 256
    rng = np.random.default_rng(0)
    with FingerprintWriter(tmp_path / "fp.h5", _contents(n=n, chunk_rows=chunk, r=16)) as w:
        done = 0
        while done < n:
            b = int(min(rng.integers(1, 700), n - done))
            w.append({"layer1": np.full((b, 16), 0.25, np.float32)})
            done += b
            for t in w._t.values():
                assert t.buf.shape[0] == min(chunk, t.dset.shape[0])
                assert t.fill < t.rows
        assert w.rows_written == n
    fp = open_fingerprints(tmp_path / "fp.h5")
    assert fp.table().shape == (n, 16) and np.all(fp.table() == 0.25)


# ----------------------------------------------------------------------------- argument checks


def _contents(
    n: int = 10, r: int = 8, chunk_rows: int = 4, dtype: str = "float16", codec: str = "none", **over
) -> FileContents:
    c = example_contents(
        H.layer_specs(1, r),
        np.arange(n) % 3,
        num_classes=3,
        storage=StorageInfo(dtype=dtype, codec=codec, chunk_rows=chunk_rows),
    )
    return replace(c, **{"sample_digests": np.arange(n, dtype=np.uint64), "classes": ["a", "b", "c"], **over})


@pytest.mark.parametrize(
    "over, err",
    [
        (dict(dtype="bfloat16"), ConfigError),
        (dict(codec="lz4"), ConfigError),
        (dict(layers=[]), ConfigError),
        (dict(layers=H.layer_specs(1, 8) * 2), ConfigError),
        (dict(labels=np.array([], dtype=np.int64), sample_digests=np.array([], dtype=np.uint64)), ConfigError),
        (dict(labels=np.array([0, 5]), sample_digests=np.arange(2, dtype=np.uint64)), ConfigError),
        (dict(sample_digests=np.arange(3, dtype=np.uint64)), MismatchError),
        (dict(tables=()), ConfigError),
        (dict(tables=("sample", "views")), ConfigError),
        (dict(chunk_rows=0), ConfigError),
        (dict(teacher=example_teacher(weights_sha256="x")), ConfigError),  # metadata the schema refuses
        (dict(dataset=example_dataset(image_shape=(32, 32))), ConfigError),  # image_shape is [H, W, channels]
        (dict(provenance=replace(fixed_provenance(), created="yesterday")), ConfigError),
        (dict(extra={"teacher": {"must_understand": False}}), ConfigError),  # shadows a field of the format
        (dict(extra={"note": 3}), ConfigError),  # an extension field must be marked ignorable
        (dict(views_per_sample=2), ConfigError),  # views.replay is false
        (dict(views_per_sample=2, views=example_views(3, replay=True)), ConfigError),  # per_sample != K
    ],
)
def test_bad_arguments(tmp_path, over, err):
    with pytest.raises(err):
        FingerprintWriter(tmp_path / "fp.h5", _contents(**over))
    assert list(tmp_path.iterdir()) == []


def test_bad_appends(tmp_path):
    with pytest.raises(MismatchError):
        with FingerprintWriter(tmp_path / "fp.h5", _contents()) as w:
            with pytest.raises(MismatchError, match="no rows"):
                w.append({"other": np.zeros((2, 8), np.float32)})
            with pytest.raises(MismatchError, match="must be"):
                w.append({"layer1": np.zeros((2, 7), np.float32)})
            w.append({"layer1": np.zeros((8, 8), np.float32)})
            w.append({"layer1": np.zeros((3, 8), np.float32)})  # 11 > 10
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "dtype, value", [("float32", np.nan), ("float16", np.inf), ("int8", -np.inf), ("float16", 70000.0)]
)
def test_non_finite_rows_refused_and_writer_still_usable(tmp_path, dtype, value):
    with FingerprintWriter(tmp_path / "fp.h5", _contents(dtype=dtype)) as w:
        bad = np.zeros((5, 8), np.float32)
        bad[3, 2] = value
        with pytest.raises(NonFiniteError, match=r"samples \[3\]") as ei:
            w.append({"layer1": bad})
        assert isinstance(ei.value, ArithmeticError)
        if value == 70000.0:
            assert "float16" in str(ei.value)
        w.append({"layer1": np.zeros((10, 8), np.float32)})
    assert open_fingerprints(tmp_path / "fp.h5").table().shape == (10, 8)


def test_views_required_with_replay(tmp_path):
    with pytest.raises(MismatchError, match="views="):
        contents = _contents(views_per_sample=2, views=example_views(2, replay=True))
        with FingerprintWriter(tmp_path / "fp.h5", contents) as w:
            w.append({"layer1": np.zeros((2, 8), np.float32)})


def test_append_after_close(tmp_path):
    w = FingerprintWriter(tmp_path / "fp.h5", _contents())
    w.append({"layer1": np.zeros((10, 8), np.float32)})
    w.close()
    with pytest.raises(ConfigError, match="closed"):
        w.append({"layer1": np.zeros((1, 8), np.float32)})


def test_redacted_layer_has_no_projection_and_no_seed(tmp_path):
    path, *_ = H.write(tmp_path / "fp.h5", num_layers=2, redacted=[True, False])
    with h5py.File(path, "r") as f:
        assert "projection" not in f["layers/0"] and "projection" in f["layers/1"]
    fp = open_fingerprints(path)
    lay = fp.layer("layer1")
    assert lay.seed is None and not lay.projection_stored
    from fpkit.projection import projection_sha256

    assert lay.projection_sha256 == projection_sha256(H.layer_specs(2, 8)[0].R)
    assert fp.layer("layer2").seed == 1


def test_writer_files_are_byte_reproducible(tmp_path):
    for name in ("a.h5", "b.h5"):
        H.write(tmp_path / name, codec="zstd", dtype="int8", k=2)
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()


def test_non_finite_metadata_is_refused_and_nothing_is_left(tmp_path):
    """JSON has no NaN/Infinity: the writer refuses them instead of writing a file other JSON
    parsers reject, and leaves neither the output nor its temporary file."""
    bad = example_dataset(normalize=Normalization(mean=(0.5,) * 3, std=(float("inf"),) * 3))
    with pytest.raises(FormatError, match="NaN or infinite"):
        with FingerprintWriter(tmp_path / "fp.h5", _contents(dataset=bad)) as w:
            w.append({"layer1": np.zeros((10, 8), np.float32)})
    assert list(tmp_path.iterdir()) == []


def test_extension_fields_are_written_and_read_back(tmp_path):
    ext = {"zz_note": {"must_understand": False, "text": "kept"}}
    with FingerprintWriter(tmp_path / "fp.h5", _contents(extra=ext)) as w:
        w.append({"layer1": np.zeros((10, 8), np.float32)})
    fp = open_fingerprints(tmp_path / "fp.h5")
    assert fp.metadata.extras == ext and fp.metadata.to_json()["zz_note"] == ext["zz_note"]
