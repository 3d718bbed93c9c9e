"""Helpers of the trust tests: small fingerprint files (fpkit.testing's example metadata, rows
that are real projections of ReLU-like features), their data regions, and how to run fpkit in a
subprocess.

Imported by name (``_trust_helpers``) from the test files and from ``_fuzz_runner.py``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from fpkit.format import StorageInfo
from fpkit.format.logits import LogitsSpec
from fpkit.testing import (
    example_contents,
    example_layers,
    example_teacher,
    example_view_params,
    write_logit_file,
    write_rows,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PYTHON = sys.executable


def env_int(name: str, default: int) -> int:
    """An integer setting from the environment (the larger settings of SECURITY.md)."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


from _support import subprocess_env  # noqa: E402,F401  (one definition for the whole suite)


def relu_features(n: int, d: int, seed: int, k: int | None = None) -> np.ndarray:
    """ReLU-like L2-normalised features [n, d] (or [n, k, d])."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal((n, k, d) if k else (n, d)))
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def write_file(
    path,
    *,
    n: int = 40,
    c: int = 4,
    d: int = 6,
    r: int = 8,
    layers: int = 1,
    dtype: str = "float16",
    codec: str = "none",
    chunk_rows: int = 8,
    k: int | None = None,
    redacted: bool = False,
    seeds=None,
    tables=("sample", "class"),
    seed: int = 0,
    accuracy=None,
    logits: str | None = None,
) -> Path:
    """A small fingerprint file whose rows are real projections of ReLU-like features.

    Returns the path.  ``seeds``: the projection seed of each layer (default 1000 + i);
    ``logits``: a ``--logits`` text (format 1.3) for Gaussian teacher logits of scale 3.
    """
    seeds = seeds or [1000 + i for i in range(layers)]
    specs = example_layers(layers, d=d, r=r, seeds=seeds, redacted=redacted)
    labels = np.arange(n, dtype=np.int64) % c
    rows, vws = {}, {}
    for i, sp in enumerate(specs):
        if k:
            f = relu_features(n, d, seed + i, k)
            vws[sp.name] = (f @ sp.R).astype(np.float32)
            rows[sp.name] = vws[sp.name].mean(axis=1).astype(np.float32)
        else:
            rows[sp.name] = (relu_features(n, d, seed + i) @ sp.R).astype(np.float32)
    vp = example_view_params(n, k, seed + 7) if k else None
    contents = example_contents(
        specs,
        labels,
        num_classes=c,
        views_per_sample=k,
        tables=tables,
        storage=StorageInfo(dtype=dtype, codec=codec, chunk_rows=chunk_rows),
    )
    contents = replace(contents, teacher=example_teacher(accuracy=accuracy))
    if logits is not None:
        spec = LogitsSpec.parse(logits, dtype="float32" if dtype == "float32" else "float16", seed=seed)
        z = np.random.default_rng(seed + 11).standard_normal((n, k, c) if spec.per_view else (n, c)) * 3
        contents = replace(contents, logits=spec)
        vw = vws if k else None
        return write_logit_file(path, contents, rows, z.astype(np.float32), views=vw, view_params=vp, batches=7)
    return write_rows(path, contents, rows, views=vws if k else None, view_params=vp, batches=7)


#: the fuzzed files: (name, write_file keyword arguments)
FUZZ_FILES = {
    "f16-none-2layers": dict(dtype="float16", codec="none", layers=2),
    "int8-zstd": dict(dtype="int8", codec="zstd"),
    "f32-gzip-replay-redacted": dict(dtype="float32", codec="gzip", k=2, redacted=True, n=24, chunk_rows=5),
    "f16-gzip-logits-topk-replay": dict(dtype="float16", codec="gzip", k=2, n=20, chunk_rows=6, logits="topk:3"),
}


def data_regions(path) -> list[tuple[int, int, str]]:
    """(byte offset, size, dataset) of every stored chunk (or contiguous block) in the file."""
    out: list[tuple[int, int, str]] = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset) or name == "README":  # 1.1's informative text: never read
            return
        if obj.chunks is None:
            off = obj.id.get_offset()
            if off is not None:
                out.append((int(off), int(obj.id.get_storage_size()), name))
            return
        for i in range(obj.id.get_num_chunks()):
            info = obj.id.get_chunk_info(i)
            out.append((int(info.byte_offset), int(info.size), name))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return sorted(out)


def meta_offsets(size: int, regions) -> np.ndarray:
    """Every byte offset of a file of ``size`` bytes that lies outside the data regions."""
    mask = np.ones(size, dtype=bool)
    for off, n, _ in regions:
        mask[off : off + n] = False
    return np.flatnonzero(mask)


def heap_header_offsets(path) -> np.ndarray:
    """Byte offsets of the headers of the file's global heap collections ("GCOL") and of their
    objects: where the variable-length root attributes (metadata, digests) are indexed."""
    import struct

    data = Path(path).read_bytes()
    out: list[int] = []
    at = data.find(b"GCOL\x01")
    while at != -1:
        (size,) = struct.unpack_from("<Q", data, at + 8)
        out += range(at, at + 16)
        o = at + 16
        while o + 16 <= at + size:
            idx, _, _, n = struct.unpack_from("<HHIQ", data, o)
            out += range(o, o + 16)
            if idx == 0:
                break
            o += 16 + (n + 7) // 8 * 8
        at = data.find(b"GCOL\x01", at + 1)
    return np.asarray(out, dtype=np.int64)
