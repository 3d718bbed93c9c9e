"""Shared helpers of the format tests: valid metadata sections, a one-call writer, a Dataset.

This module is imported by name (``_helpers``) from the test files, and by DataLoader workers
started with "spawn", which is why the Dataset class lives here and not in a test file.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np

from fpkit.format import FingerprintWriter, LayerSpec
from fpkit.projection import make_projection

REPO = Path(__file__).resolve().parents[2]
GOLDEN = REPO / "formats" / "golden"
CREATED = "2026-01-01T00:00:00Z"
LIBRARIES = {"python": "test", "numpy": "test", "h5py": "test", "hdf5": "test"}


def teacher() -> dict:
    return {"arch": "resnet8", "weights_sha256": "0" * 64, "num_params": 1, "source_kind": "synthetic",
            "trusted_code": False, "accuracy": None}


def dataset() -> dict:
    return {"name": "test", "split": "train", "image_shape": [32, 32, 3],
            "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}


def views(k: int | None) -> dict:
    return {"policy": {"name": "pad_crop_flip", "padding": 4, "fill": 0, "flip": True},
            "count": k or 8, "per_sample": k or 8, "seed": 0, "replay": bool(k)}


COMPUTE = {"device": "cpu", "autocast": None, "batch_size": 8, "world_size": 1}


def rows_for(n: int, r: int, seed: int, k: int | None = None) -> np.ndarray:
    """float32 Gaussian rows (scale 0.3, so |x| < 2 like real fingerprints), seeded."""
    rng = np.random.default_rng(seed)
    shape = (n, k, r) if k else (n, r)
    return rng.standard_normal(shape).astype(np.float32) * np.float32(0.3)


def layer_specs(num_layers: int, r: int, d: int = 6, redacted: Sequence[bool] | None = None) -> list[LayerSpec]:
    redacted = redacted or [False] * num_layers
    return [LayerSpec(f"layer{i + 1}", "avg", d, make_projection(d, r, i), i, redacted=redacted[i])
            for i in range(num_layers)]


def write(path, *, n: int = 10, c: int = 3, r: int = 8, num_layers: int = 1, dtype: str = "float16",
          codec: str = "none", chunk_rows: int = 4, tables=("sample", "class"), k: int | None = None,
          labels: np.ndarray | None = None, rows: dict | None = None, vws: dict | None = None,
          batch: int = 3, redacted=None, seed: int = 0, **kw):
    """Write a file; return (path, labels, rows, views, view_params) with the exact inputs."""
    specs = layer_specs(num_layers, r, redacted=redacted)
    if labels is None:
        labels = np.random.default_rng(seed + 100).integers(0, c, n)
    labels = np.asarray(labels, dtype=np.int64)
    digests = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15 % 2**63)
    if vws is None and k:
        vws = {sp.name: rows_for(n, r, seed + i, k) for i, sp in enumerate(specs)}
    if rows is None:
        rows = ({name: v.mean(axis=1).astype(np.float32) for name, v in vws.items()} if k else
                {sp.name: rows_for(n, r, seed + i) for i, sp in enumerate(specs)})
    vp = None
    if k:
        vp = np.random.default_rng(seed + 7).integers(0, 9, (n, k, 3)).astype(np.int16)
        vp[..., 2] %= 2
    with FingerprintWriter(path, layers=specs, labels=labels, sample_digests=digests,
                           classes=[f"c{i}" for i in range(c)], teacher=teacher(), dataset=dataset(),
                           views=views(k), compute=COMPUTE, tables=tables, views_per_sample=k,
                           dtype=dtype, codec=codec, chunk_rows=chunk_rows, created=CREATED,
                           libraries=LIBRARIES, **kw) as w:
        for s in range(0, n, batch):
            sl = slice(s, s + batch)
            w.append({name: x[sl] for name, x in rows.items()},
                     views=None if not k else {name: v[sl] for name, v in vws.items()},
                     view_params=None if vp is None else vp[sl])
    return Path(path), labels, rows, vws, vp


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
