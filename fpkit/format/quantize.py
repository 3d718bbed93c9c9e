"""Storage dtypes: float32, float16, and int8 with one float32 scale per row."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .spec import DTYPES


def check_dtype(dtype: str) -> None:
    if dtype not in DTYPES:
        raise ConfigError(f"unknown storage dtype {dtype!r}; choose one of {', '.join(DTYPES)}")


def encode(rows: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Encode float32 rows (last axis = r) to ``dtype``.

    int8: ``scale = max|row| / 127`` (float32), ``q = rint(row / scale)``; an all-zero row has
    scale 0 and q = 0.  Returns (stored, scale), scale None for float types.
    """
    check_dtype(dtype)
    rows = np.asarray(rows, dtype=np.float32)
    if dtype == "float32":
        return rows.astype("<f4", copy=True), None
    if dtype == "float16":
        return rows.astype("<f2"), None
    scale = (np.abs(rows).max(axis=-1) / np.float32(127.0)).astype("<f4")
    safe = np.where(scale > 0, scale, np.float32(1.0))[..., None]
    q = np.clip(np.rint(rows / safe), -127, 127).astype(np.int8)
    return q, scale


def decode(stored: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """Return the float32 values a stored table represents."""
    if scale is None:
        return stored.astype(np.float32)
    return stored.astype(np.float32) * scale.astype(np.float32)[..., None]


def min_row_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest cosine similarity between corresponding rows (last axis); two zero rows count 1."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, a.shape[-1])
    b = np.asarray(b, dtype=np.float64).reshape(-1, b.shape[-1])
    if a.shape[0] == 0:
        return 1.0
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    dot = np.sum(a * b, axis=1)
    both_zero = (na == 0) & (nb == 0)
    cos = np.where(both_zero, 1.0, dot / np.maximum(na * nb, 1e-300))
    return float(np.min(cos))
