"""Codecs: dataset layout per codec, damaged chunks, and zstd interoperability with hdf5plugin."""

from __future__ import annotations

import shutil
import struct

import _helpers as H
import h5py
import numpy as np
import pytest
import zstandard

from fpkit.errors import ConfigError, CorruptFileError
from fpkit.format import codecs, open_fingerprints, verify_fingerprints
from fpkit.format.spec import GZIP_LEVEL, ZSTD_FILTER_ID, ZSTD_LEVEL


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
def test_layout(tmp_path, codec):
    path, *_ = H.write(tmp_path / "fp.h5", n=11, chunk_rows=4, codec=codec, dtype="int8", k=2)
    with h5py.File(path, "r") as f:
        names = []
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert names.pop(0) == "README" and f["README"].chunks is None  # 1.1's informative text, not a table
        assert len(names) == 11
        for name in names:
            d = f[name]
            rows = 4 // 2 if name.startswith("views") or "/views" in name or name == "view_params" else 4
            assert d.chunks == (min(rows, d.shape[0]),) + d.shape[1:], name  # per-view: chunk_rows // K
            assert d.dtype.byteorder in ("<", "|", "=")
            if codec == "none":
                assert d.fletcher32 and d.compression is None and not d.shuffle
            elif codec == "gzip":
                assert d.fletcher32 and d.shuffle and d.compression == "gzip"
                assert d.compression_opts == GZIP_LEVEL
            else:
                assert not d.fletcher32 and d.shuffle
                assert d._filters[str(ZSTD_FILTER_ID)] == (ZSTD_LEVEL,)
                assert list(d._filters) == ["shuffle", str(ZSTD_FILTER_ID)]  # shuffle first


def test_zstd_chunks_are_full_checksummed_frames(tmp_path):
    path, _, rows, *_ = H.write(
        tmp_path / "fp.h5", n=11, r=5, chunk_rows=4, codec="zstd", dtype="float32", tables=("sample",)
    )
    with h5py.File(path, "r") as f:
        d = f["layers/0/sample"]
        for start in (0, 4, 8):  # the last chunk holds 3 rows, padded to 4 with zeros
            mask, frame = d.id.read_direct_chunk((start, 0))
            assert mask == 0
            params = zstandard.get_frame_parameters(frame)
            assert params.has_checksum and params.content_size == 4 * 5 * 4
            raw = zstandard.ZstdDecompressor().decompress(frame)
            block = np.frombuffer(raw, np.uint8).reshape(4, -1).T.copy().view("<f4").reshape(4, 5)
            n = min(4, 11 - start)
            assert np.array_equal(block[:n], rows["layer1"][start : start + n])
            assert not block[n:].any()


def test_check_codec():
    with pytest.raises(ConfigError, match="none, gzip, zstd"):
        codecs.check_codec("lz4")


# ----------------------------------------------------------------------------- damage


def _flip_bit(path, dataset: str, chunk_index: int, where: float = 0.5) -> None:
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk_index)
    with open(path, "r+b") as fh:
        pos = info.byte_offset + int(info.size * where)
        fh.seek(pos)
        b = fh.read(1)[0]
        fh.seek(pos)
        fh.write(bytes([b ^ 0x04]))


@pytest.mark.parametrize("codec", ["none", "gzip", "zstd"])
@pytest.mark.parametrize(
    "dataset, chunk", [("layers/0/sample", 0), ("layers/0/sample", 2), ("layers/0/class", 0), ("labels", 1)]
)
@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_flipped_bit_in_table_data(tmp_path, codec, dataset, chunk, where):
    path, *_ = H.write(tmp_path / "fp.h5", n=11, r=8, chunk_rows=4, codec=codec, dtype="float16")
    before = open_fingerprints(path)
    _flip_bit(path, dataset, chunk, where)
    with pytest.raises(CorruptFileError) as ei:
        open_fingerprints(path)
    assert dataset in str(ei.value)
    problems = verify_fingerprints(path)
    assert len(problems) == 1 and dataset in problems[0]
    assert before.table().shape == (11, 8)


def test_verify_collects_every_damaged_table(tmp_path):
    path, *_ = H.write(tmp_path / "fp.h5", n=11, r=8, chunk_rows=4, codec="gzip")
    _flip_bit(path, "layers/0/sample", 1)
    _flip_bit(path, "sample_digests", 0)
    problems = verify_fingerprints(path)
    assert len(problems) == 2
    assert any("layers/0/sample" in p for p in problems) and any("sample_digests" in p for p in problems)


def test_zstd_read_errors(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        d = codecs.create_table(f, "t", (6, 3), "float32", "zstd", 4)
        codecs.write_chunk(d, "zstd", 0, np.ones((4, 3), np.float32))

    def last_chunk(frame: bytes | None, mask: int = 0):
        # reopen for every read: HDF5 reports a direct write's filter mask only once it is stored
        if frame is not None:
            with h5py.File(path, "r+") as f:
                f["t"].id.write_direct_chunk((4, 0), frame, filter_mask=mask)
        with h5py.File(path, "r") as f:
            return codecs.read_table(f["t"], "zstd")

    with pytest.raises(CorruptFileError, match="table t"):  # chunk 2 was never written
        last_chunk(None)
    with pytest.raises(CorruptFileError, match="declares 8 bytes, expected 48"):
        last_chunk(zstandard.ZstdCompressor().compress(b"\0" * 8))
    with pytest.raises(CorruptFileError, match="declares no size"):  # the spec requires a declared size
        last_chunk(zstandard.ZstdCompressor(write_content_size=False).compress(b"\0" * 48))
    with pytest.raises(CorruptFileError):
        last_chunk(b"not zstd")
    with pytest.raises(CorruptFileError, match="declares 4800 bytes"):
        last_chunk(zstandard.ZstdCompressor().compress(b"\0" * 4800))
    frame = zstandard.ZstdCompressor().compress(b"\0" * 48)  # header: 1-byte size, single segment
    huge = frame[:4] + bytes([0xE0]) + struct.pack("<Q", 2**40) + frame[6:]  # claims 1 TiB
    with pytest.raises(CorruptFileError, match="declares 1099511627776 bytes"):  # not MemoryError
        last_chunk(huge)
    with pytest.raises(CorruptFileError, match="unused data"):  # bytes after the frame
        last_chunk(zstandard.ZstdCompressor().compress(b"\0" * 48) + b"junk!!!")
    checked = bytearray(zstandard.ZstdCompressor(write_checksum=True).compress(bytes(range(48))))
    checked[-1] ^= 0x01  # the content checksum no longer fits
    with pytest.raises(CorruptFileError, match="checksum"):
        last_chunk(bytes(checked))
    # a frame without checksum (what hdf5plugin's filter 32015 writes) is read
    plain = last_chunk(zstandard.ZstdCompressor(write_checksum=False).compress(b"\0" * 48))
    assert not plain[4:].any()
    out = last_chunk(zstandard.ZstdCompressor().compress(b"\0" * 48))
    assert out.shape == (6, 3) and out[:4].tolist() == [[1.0] * 3] * 4 and not out[4:].any()

    # a chunk stored with a skipped filter (mask != 0) is refused; HDF5 keeps the mask of the
    # first write of a chunk, so this one goes into a fresh dataset
    with h5py.File(path, "r+") as f:
        d = codecs.create_table(f, "m", (4, 3), "float32", "zstd", 4)
        d.id.write_direct_chunk((0, 0), zstandard.ZstdCompressor().compress(b"\0" * 48), filter_mask=1)
    with h5py.File(path, "r") as f:
        with pytest.raises(CorruptFileError, match="filter mask 1"):
            codecs.read_table(f["m"], "zstd")


# ----------------------------------------------------------------------------- hdf5plugin interop


@pytest.mark.parametrize("dtype", ["float32", "float16", "int8"])
def test_fpkit_zstd_file_reads_through_hdf5plugin(tmp_path, dtype):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    assert hdf5plugin.ZSTD_ID == ZSTD_FILTER_ID
    path, *_ = H.write(tmp_path / "fp.h5", n=13, r=7, chunk_rows=5, codec="zstd", dtype=dtype, k=3)
    fp = open_fingerprints(path)
    with h5py.File(path, "r") as f:
        for name, arr in fp.arrays.items():
            other = f[name][()]
            assert other.dtype == arr.dtype and np.array_equal(other, arr), name
            assert np.array_equal(f[name][3:11], arr[3:11])  # partial reads across chunks


@pytest.mark.parametrize(
    "dtype, shape, chunks",
    [
        ("float16", (13, 7), (5, 7)),
        ("float32", (9, 2, 4), (4, 2, 4)),
        ("int8", (10, 3), (4, 3)),
        ("int64", (7,), (3,)),
        ("uint64", (5,), (5,)),
    ],
)
def test_hdf5plugin_zstd_dataset_decodes_with_read_table(tmp_path, dtype, shape, chunks):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(shape) * 50).astype(dtype)
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f.create_dataset("t", data=data, chunks=chunks, shuffle=True, **hdf5plugin.Zstd(clevel=5))
    with h5py.File(tmp_path / "p.h5", "r") as f:
        assert list(f["t"]._filters) == ["shuffle", str(ZSTD_FILTER_ID)]
        out = codecs.read_table(f["t"], "zstd")
    assert out.dtype == data.dtype and np.array_equal(out, data)


def test_golden_zstd_file_through_hdf5plugin(tmp_path):
    pytest.importorskip("hdf5plugin")
    shutil.copy(H.GOLDEN / "v1-int8-zstd.h5", tmp_path / "g.h5")
    fp = open_fingerprints(tmp_path / "g.h5")
    with h5py.File(tmp_path / "g.h5", "r") as f:
        assert np.array_equal(f["layers/0/sample"][()], fp.arrays["layers/0/sample"])
        assert np.array_equal(f["layers/0/sample_scale"][()], fp.arrays["layers/0/sample_scale"])
