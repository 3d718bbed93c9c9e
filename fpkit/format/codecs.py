"""How tables are laid out and compressed inside the HDF5 file.

* ``none``: chunked, fletcher32 checksum per chunk.  Every HDF5 tool reads it.
* ``gzip``: byte shuffle + deflate (level 4) + fletcher32.  Built into every HDF5 build.
* ``zstd``: byte shuffle + zstd (registered HDF5 filter 32015).  fpkit writes each chunk itself
  with the ``zstandard`` package through direct chunk writes (frames declare their size and carry
  zstd's content checksum) and reads them back the same way, so it needs no HDF5 plugin; other
  tools read the file through hdf5plugin.  Frames without a checksum (hdf5plugin writes those)
  are read; a checksum that is present is always verified.
"""

from __future__ import annotations

import h5py
import numpy as np
import zstandard

from ..errors import ConfigError, CorruptFileError
from .spec import CODECS, GZIP_LEVEL, ZSTD_FILTER_ID, ZSTD_LEVEL

# The HDF5 filter ids, in pipeline order, that each codec's datasets carry (format section 9).
FILTER_PIPELINES: dict[str, tuple[int, ...]] = {
    "none": (h5py.h5z.FILTER_FLETCHER32,),
    "gzip": (h5py.h5z.FILTER_SHUFFLE, h5py.h5z.FILTER_DEFLATE, h5py.h5z.FILTER_FLETCHER32),
    "zstd": (h5py.h5z.FILTER_SHUFFLE, ZSTD_FILTER_ID),
}


def check_codec(codec: str) -> None:
    if codec not in CODECS:
        raise ConfigError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")


def create_table(
    group: h5py.Group, name: str, shape: tuple[int, ...], dtype: str, codec: str, chunk_rows: int
) -> h5py.Dataset:
    """Create an empty chunked dataset laid out as ``codec`` prescribes."""
    check_codec(codec)
    chunks = (max(1, min(chunk_rows, shape[0])),) + tuple(shape[1:])
    kwargs: dict = dict(shape=shape, dtype=np.dtype(dtype).newbyteorder("<"), chunks=chunks, track_times=False)
    if codec == "none":
        kwargs.update(fletcher32=True)
    elif codec == "gzip":
        kwargs.update(shuffle=True, compression="gzip", compression_opts=GZIP_LEVEL, fletcher32=True)
    else:
        kwargs.update(
            shuffle=True, compression=ZSTD_FILTER_ID, compression_opts=(ZSTD_LEVEL,), allow_unknown_filter=True
        )
    return group.create_dataset(name, **kwargs)


def _shuffle(buf: np.ndarray) -> bytes:
    item = buf.dtype.itemsize
    return np.ascontiguousarray(buf).view(np.uint8).reshape(-1, item).T.tobytes()


def _unshuffle(raw: bytes, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    item = dtype.itemsize
    b = np.frombuffer(raw, dtype=np.uint8).reshape(item, -1).T
    return np.ascontiguousarray(b).view(dtype).reshape(shape)


def write_chunk(dset: h5py.Dataset, codec: str, start: int, rows: np.ndarray) -> None:
    """Write ``rows`` at row ``start``; ``start`` is a chunk boundary and ``rows`` at most a chunk."""
    if codec != "zstd":
        dset[start : start + rows.shape[0]] = rows
        return
    chunk_shape = dset.chunks
    full = np.zeros(chunk_shape, dtype=dset.dtype)
    full[: rows.shape[0]] = rows
    frame = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(_shuffle(full))
    dset.id.write_direct_chunk((start,) + (0,) * (dset.ndim - 1), frame, filter_mask=0)


def read_table(dset: h5py.Dataset, codec: str) -> np.ndarray:
    """Read a whole table into memory, decoding zstd chunks without any HDF5 plugin.

    Raises:
        CorruptFileError: a checksum fails, a chunk is missing or does not decompress.
    """
    name = dset.name.lstrip("/")
    try:
        if codec != "zstd":
            return dset[()]
        out = np.empty(dset.shape, dtype=dset.dtype)
        chunk = dset.chunks
        if chunk is None or chunk[1:] != dset.shape[1:]:
            raise CorruptFileError(
                f"table {name} is not chunked by rows as a zstd table must be; "
                "the file is damaged: download or rebuild it"
            )
        nbytes = int(np.prod(chunk)) * dset.dtype.itemsize
        dctx = zstandard.ZstdDecompressor()
        for start in range(0, dset.shape[0], chunk[0]):
            coord = (start,) + (0,) * (dset.ndim - 1)
            # h5py allocates what the chunk index says: check it before reading (a missing chunk
            # raises MemoryError there, a damaged size could ask for any amount of memory)
            info = dset.id.get_chunk_info_by_coord(coord)
            if info.byte_offset is None or not 0 < info.size <= nbytes + nbytes // 128 + 1024:
                raise CorruptFileError(
                    f"table {name}: chunk at row {start} is missing or has an impossible size "
                    f"({info.size} bytes); the file is damaged: download or rebuild it"
                )
            mask, frame = dset.id.read_direct_chunk(coord)
            if mask != 0:
                raise CorruptFileError(f"table {name}: chunk at row {start} has filter mask {mask}, expected 0")
            # the frame header's "unused" bit 4 is 0 in every encoder's output and ignored by decoders:
            # set, it is damage that decoding alone would not report
            if len(frame) > 4 and frame[4] & 0x10:
                raise CorruptFileError(
                    f"table {name}: chunk at row {start} has a damaged zstd frame header; "
                    "the file is damaged: download or rebuild it"
                )
            # a frame header may claim any size: refuse it before zstandard allocates that much
            claimed = zstandard.get_frame_parameters(frame).content_size
            if claimed != nbytes:
                said = "no size" if claimed == zstandard.CONTENTSIZE_UNKNOWN else f"{claimed} bytes"
                raise CorruptFileError(
                    f"table {name}: chunk at row {start} declares {said}, expected {nbytes}; "
                    "the file is damaged: download or rebuild it"
                )
            # one frame, nothing after it, output bounded; a checksum present is verified
            raw = dctx.decompress(frame, max_output_size=nbytes, allow_extra_data=False)
            if len(raw) != nbytes:
                raise CorruptFileError(f"table {name}: chunk at row {start} holds {len(raw)} bytes, expected {nbytes}")
            block = _unshuffle(raw, dset.dtype, chunk)
            n = min(chunk[0], dset.shape[0] - start)
            out[start : start + n] = block[:n]
        return out
    except CorruptFileError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, zstandard.ZstdError) as e:
        raise CorruptFileError(
            f"table {name} cannot be read ({type(e).__name__}: {e}); the file is damaged: download or rebuild it"
        ) from e
