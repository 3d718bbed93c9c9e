"""Helpers of the trust tests: small fingerprint files written with FingerprintWriter, their
data regions, and how to run fpkit in a subprocess.

Imported by name (``_trust_helpers``) from the test files and from ``_fuzz_runner.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import h5py
import numpy as np

from fpkit.format import FingerprintWriter, LayerSpec
from fpkit.projection import make_projection

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PYTHON = sys.executable
CREATED = "2026-01-01T00:00:00Z"
LIBRARIES = {"python": "test", "numpy": "test", "h5py": "test", "hdf5": "test"}


def env_int(name: str, default: int) -> int:
    """An integer setting from the environment (the larger settings of SECURITY.md)."""
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


from _support import subprocess_env  # noqa: E402,F401  (one definition for the whole suite)


def _meta(k: int | None, accuracy=None):
    teacher = {"arch": "resnet8", "weights_sha256": "ab" * 32, "num_params": 78042, "source_kind": "state_dict",
               "trusted_code": False, "accuracy": accuracy}
    dataset = {"name": "trust", "split": "train", "image_shape": [32, 32, 3],
               "normalize": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    views = {"policy": {"name": "pad_crop_flip", "padding": 4, "fill": 0, "flip": True},
             "count": k or 4, "per_sample": k or 4, "seed": 0, "replay": bool(k)}
    compute = {"device": "cpu", "autocast": None, "batch_size": 8, "world_size": 1}
    return teacher, dataset, views, compute


def relu_features(n: int, d: int, seed: int, k: int | None = None) -> np.ndarray:
    """ReLU-like L2-normalised features [n, d] (or [n, k, d])."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.standard_normal((n, k, d) if k else (n, d)))
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def write_file(path, *, n: int = 40, c: int = 4, d: int = 6, r: int = 8, layers: int = 1,
               dtype: str = "float16", codec: str = "none", chunk_rows: int = 8, k: int | None = None,
               redacted: bool = False, seeds=None, tables=("sample", "class"), seed: int = 0,
               accuracy=None) -> Path:
    """A small fingerprint file whose rows are real projections of ReLU-like features.

    Returns the path.  ``seeds``: the projection seed of each layer (default 1000 + i).
    """
    seeds = seeds or [1000 + i for i in range(layers)]
    specs = [LayerSpec(f"layer{i + 1}", "avg", d, make_projection(d, r, seeds[i]), seeds[i], redacted=redacted)
             for i in range(layers)]
    labels = np.arange(n, dtype=np.int64) % c
    digests = (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    rows, vws = {}, {}
    for i, sp in enumerate(specs):
        if k:
            f = relu_features(n, d, seed + i, k)
            vws[sp.name] = (f @ sp.R).astype(np.float32)
            rows[sp.name] = vws[sp.name].mean(axis=1).astype(np.float32)
        else:
            rows[sp.name] = (relu_features(n, d, seed + i) @ sp.R).astype(np.float32)
    vp = None
    if k:
        vp = np.random.default_rng(seed + 7).integers(0, 9, (n, k, 3)).astype(np.int16)
        vp[..., 2] %= 2
    teacher, dataset, views, compute = _meta(k, accuracy)
    with FingerprintWriter(path, layers=specs, labels=labels, sample_digests=digests,
                           classes=[f"class{i}" for i in range(c)], teacher=teacher, dataset=dataset,
                           views=views, compute=compute, tables=tables, views_per_sample=k, dtype=dtype,
                           codec=codec, chunk_rows=chunk_rows, created=CREATED, libraries=LIBRARIES) as w:
        for s in range(0, n, 7):
            sl = slice(s, s + 7)
            w.append({name: x[sl] for name, x in rows.items()},
                     views={name: v[sl] for name, v in vws.items()} if k else None,
                     view_params=vp[sl] if k else None)
    return Path(path)


#: the fuzzed files: (name, write_file keyword arguments)
FUZZ_FILES = {
    "f16-none-2layers": dict(dtype="float16", codec="none", layers=2),
    "int8-zstd": dict(dtype="int8", codec="zstd"),
    "f32-gzip-replay-redacted": dict(dtype="float32", codec="gzip", k=2, redacted=True, n=24, chunk_rows=5),
}


def data_regions(path) -> list[tuple[int, int, str]]:
    """(byte offset, size, dataset) of every stored chunk (or contiguous block) in the file."""
    out: list[tuple[int, int, str]] = []

    def visit(name, obj):
        if not isinstance(obj, h5py.Dataset):
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
        mask[off:off + n] = False
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
