"""The writer's low-level parts: a dataset streamed chunk by chunk, fsync, and OS error translation."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import FpkitPermissionError, MismatchError, StorageError
from . import codecs
from .digests import TableDigest
from .metadata import DatasetEntry


class StreamedTable:
    """One HDF5 dataset being streamed: a chunk buffer, a running SHA-256 and the row count."""

    def __init__(self, dset: h5py.Dataset, codec: str):
        self.dset, self.codec = dset, codec
        self.rows = dset.chunks[0]
        self.buf = np.zeros(dset.chunks, dtype=dset.dtype)
        self.fill = 0
        self.written = 0
        self.sha = TableDigest()

    def append(self, data: np.ndarray) -> None:
        data = np.asarray(data, dtype=self.dset.dtype)
        self.sha.update(data)
        pos = 0
        while pos < data.shape[0]:
            take = min(self.rows - self.fill, data.shape[0] - pos)
            self.buf[self.fill : self.fill + take] = data[pos : pos + take]
            self.fill += take
            pos += take
            if self.fill == self.rows:
                self._flush()

    def _flush(self) -> None:
        if self.fill:
            codecs.write_chunk(self.dset, self.codec, self.written, self.buf[: self.fill])
            self.written += self.fill
            self.fill = 0

    def finish(self) -> DatasetEntry:
        self._flush()
        if self.written != self.dset.shape[0]:
            raise MismatchError(f"table {self.dset.name} got {self.written} rows, expected {self.dset.shape[0]}")
        return DatasetEntry(dtype=str(self.dset.dtype), shape=tuple(self.dset.shape), sha256=self.sha.hexdigest())


def fsync_file(path: Path) -> None:
    """Flush a file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries to disk, where the filesystem allows it."""
    try:
        fsync_file(path)
    except OSError:  # some filesystems do not allow fsync on folders
        pass


def storage_error(e: BaseException, path: Path) -> BaseException:
    """The fpkit error for an OSError met while writing ``path`` (disk full, permission, I/O);
    other exceptions, and errors already translated, are returned as they are."""
    if not isinstance(e, OSError) or isinstance(e, (StorageError, FpkitPermissionError)):
        return e
    if getattr(e, "errno", None) == errno.ENOSPC or "No space" in str(e):
        return StorageError(errno.ENOSPC, f"disk full while writing {path}; free space or choose another -o path")
    if isinstance(e, PermissionError):
        return FpkitPermissionError(f"cannot write {path}: {e}; choose a writable -o path")
    return StorageError(getattr(e, "errno", None) or errno.EIO, f"writing {path} failed: {e}")
