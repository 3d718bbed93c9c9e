"""Shared helpers of the format tests: a one-call writer over fpkit.testing, metadata editing, a Dataset.

This module is imported by name (``_helpers``) from the test files, and by DataLoader workers
started with "spawn", which is why the Dataset class lives here and not in a test file.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import h5py
import numpy as np

from fpkit.testing import ExampleFile, example_layers, example_rows, write_example_file

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "formats" / "golden"
rows_for = example_rows


def layer_specs(num_layers: int, r: int, d: int = 6, redacted=None):
    """The example layers layer1.. with projection seeds 0, 1, ..."""
    return example_layers(num_layers, d=d, r=r, redacted=redacted or False)


def write(
    path,
    *,
    n: int = 10,
    c: int = 3,
    r: int = 8,
    num_layers: int = 1,
    dtype: str = "float16",
    codec: str = "none",
    chunk_rows: int = 4,
    tables=("sample", "class"),
    k: int | None = None,
    labels: np.ndarray | None = None,
    rows: dict | None = None,
    vws: dict | None = None,
    batch: int = 3,
    redacted=None,
    seed: int = 0,
    overwrite: bool = False,
):
    """Write a file (fpkit.testing.write_example_file); return (path, labels, rows, views, view_params)."""
    spec = ExampleFile(
        n=n,
        classes=c,
        r=r,
        layers=num_layers,
        tables=tuple(tables),
        replay=k,
        redact=tuple(redacted) if redacted else False,
        dtype=dtype,
        codec=codec,
        chunk_rows=chunk_rows,
        batch=batch,
        seed=seed,
    )
    data = write_example_file(path, spec, labels=labels, rows=rows, views=vws, overwrite=overwrite)
    return data.path, data.labels, data.rows, data.views, data.view_params


def set_metadata(path, meta: dict, *, recompute_complete: bool = True) -> None:
    """Replace a file's metadata in place (and its completion digest unless told otherwise)."""
    text = json.dumps(meta, sort_keys=True, separators=(",", ":"))
    with h5py.File(path, "r+") as f:
        f.attrs["metadata"] = text
        if recompute_complete:
            f.attrs["complete"] = hashlib.sha256(text.encode()).hexdigest()


def get_metadata(path) -> dict:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["metadata"])


class SampleTableDataset:
    """A minimal map-style Dataset over a loaded FingerprintFile (must pickle for workers)."""

    def __init__(self, fp, kind: str = "sample"):
        self.fp = fp
        self.kind = kind

    def __len__(self) -> int:
        return self.fp.num_samples

    def __getitem__(self, i: int):
        return self.fp.table(self.kind)[i], int(self.fp.labels[i])


# ----------------------------------------------------------------------------- independent references


def ref_int8(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantise row by row with Python scalars: scale = max|x| / 127 (float32), q = round-half-even."""
    flat = np.asarray(rows, dtype=np.float32).reshape(-1, rows.shape[-1])
    q = np.zeros(flat.shape, dtype=np.int8)
    scale = np.zeros(flat.shape[0], dtype=np.float32)
    for i, row in enumerate(flat):
        m = max(abs(float(x)) for x in row)
        s = np.float32(np.float32(m) / np.float32(127.0))
        scale[i] = s
        if s > 0:
            q[i] = [max(-127, min(127, round(float(np.float32(x) / s)))) for x in row]
    return q.reshape(rows.shape), scale.reshape(rows.shape[:-1])


def ref_decoded(rows: np.ndarray, dtype: str) -> np.ndarray:
    """The float32 values a reader must get back for ``rows`` stored as ``dtype``."""
    rows = np.asarray(rows, dtype=np.float32)
    if dtype == "float32":
        return rows
    if dtype == "float16":
        return rows.astype(np.float16).astype(np.float32)
    q, s = ref_int8(rows)
    return q.astype(np.float32) * s[..., None]


def ref_class_means(rows: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    """Mean per class of the float32 rows, accumulated in float64 in sample order; 0 if empty."""
    out = np.zeros((c, rows.shape[1]), dtype=np.float32)
    for cls in range(c):
        acc, count = np.zeros(rows.shape[1], dtype=np.float64), 0
        for i in range(rows.shape[0]):
            if labels[i] == cls:
                acc = acc + rows[i].astype(np.float64)
                count += 1
        if count:
            out[cls] = (acc / count).astype(np.float32)
    return out


def ref_min_cos(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64).reshape(-1, a.shape[-1])
    b = np.asarray(b, dtype=np.float64).reshape(-1, b.shape[-1])
    best = 1.0
    for x, y in zip(a.tolist(), b.tolist()):
        nx, ny = math.sqrt(math.fsum(v * v for v in x)), math.sqrt(math.fsum(v * v for v in y))
        if nx == 0 and ny == 0:
            cos = 1.0
        elif nx == 0 or ny == 0:
            cos = 0.0
        else:
            cos = math.fsum(u * v for u, v in zip(x, y)) / (nx * ny)
        best = min(best, cos)
    return best


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()
