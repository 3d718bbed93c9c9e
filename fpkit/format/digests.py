"""Every digest of the fingerprint format (formats/SPEC.md, section 6), in one place.

All digests are lowercase hex SHA-256 over little-endian, C-order bytes, except the per-sample
digest, which keeps the first 8 bytes of one as a uint64.  ``weights_sha256`` (the teacher's
state_dict) lives with the teacher loaders in :mod:`fpkit.teachers`.
"""

from __future__ import annotations

import hashlib

import numpy as np


def sample_digest(pixels: np.ndarray) -> int:
    """Per-sample digest: the first 8 bytes (little-endian uint64) of SHA-256 of the image's
    uint8 pixels in H x W x C order (C omitted for one-channel images stored as H x W)."""
    arr = np.ascontiguousarray(pixels, dtype=np.uint8)
    return int.from_bytes(hashlib.sha256(arr.tobytes()).digest()[:8], "little")


def labels_sha256(labels: np.ndarray) -> str:
    """SHA-256 of the label vector as little-endian int64."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i8").tobytes()).hexdigest()


def order_sha256(sample_digests: np.ndarray) -> str:
    """SHA-256 of the per-sample digests (little-endian uint64) in sample order."""
    return hashlib.sha256(np.ascontiguousarray(sample_digests, dtype="<u8").tobytes()).hexdigest()


def projection_sha256(R) -> str:
    """SHA-256 (hex) of R (numpy array or torch tensor) as little-endian float32 bytes, row-major."""
    if hasattr(R, "detach"):
        R = R.detach().cpu().numpy()
    return hashlib.sha256(np.ascontiguousarray(R, dtype="<f4").tobytes()).hexdigest()


def _stored_bytes(values: np.ndarray) -> bytes:
    """A dataset's stored values as little-endian, C-order bytes (no copy on little-endian hosts)."""
    arr = np.asarray(values)
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def table_sha256(values: np.ndarray) -> str:
    """The ``sha256`` of an entry of ``datasets``: over the dataset's stored values (the storage
    dtype, e.g. int8 codes, not decoded floats), little-endian, C order, exactly shape-many."""
    return hashlib.sha256(_stored_bytes(values)).hexdigest()


class TableDigest:
    """:func:`table_sha256` computed incrementally, for a dataset written in row blocks."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update(self, rows: np.ndarray) -> None:
        """Add the next rows (in file order) of the dataset, in its stored dtype."""
        self._sha.update(_stored_bytes(rows))

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


__all__ = ["TableDigest", "labels_sha256", "order_sha256", "projection_sha256", "sample_digest", "table_sha256"]
