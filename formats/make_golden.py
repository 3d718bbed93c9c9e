"""Write the golden files of fingerprint format v1 into formats/golden/ (see formats/SPEC.md).

    python formats/make_golden.py [OUTDIR]

Tiny files of format 1.0 (kept as they were: readers must still read them) and of 1.1,
byte-reproducible for a given HDF5 library version, and expected.json with the
exact float32 values every table must decode to.  Everything that would vary is pinned: the
creation time, the library versions and the fpkit version recorded in the metadata (a fixed
:class:`~fpkit.format.Provenance`), and the inputs, which are computed with element-wise float32
operations only (no BLAS, whose summation order may differ between machines).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np

from fpkit.augment import ViewPolicy
from fpkit.format import Accuracy, FileContents, LayerSpec, Provenance, StorageInfo, Subset, sample_digest
from fpkit.format.logits import LogitsSpec
from fpkit.projection import make_projection
from fpkit.testing import (
    example_compute,
    example_dataset,
    example_policy_views,
    example_teacher,
    example_views,
    write_logit_file,
    write_rows,
)

CREATED = "2026-01-01T00:00:00Z"
FPKIT_VERSION = "0.1.0"
LIBRARIES = {
    "python": "3.11.7",
    "numpy": "2.4.6",
    "h5py": "3.16.0",
    "hdf5": "2.0.0",
    "torch": "2.14.1",
    "torchvision": "0.29.1",
}
PROVENANCE = Provenance(fpkit_version=FPKIT_VERSION, created=CREATED, libraries=LIBRARIES)
N, C, D, R_WIDTH, CHUNK_ROWS = 12, 3, 4, 8, 5
CLASSES = ["cat", "dog", "eel"]
FILES_1_0 = ("v1-float16-none.h5", "v1-int8-zstd.h5", "v1-float32-gzip-replay-redacted.h5")
FILES_1_1 = ("v1.1-float16-none.h5", "v1.1-int8-gzip-subset.h5")
FILES_1_2 = ("v1.2-resized-crop-replay.h5", "v1.2-center-replay.h5")
FILES_1_3 = (
    "v1.3-logits-mean.h5",
    "v1.3-logits-full-float32-gzip-replay.h5",
    "v1.3-logits-topk-replay.h5",
    "v1.3-logits-sample-zstd-replay.h5",
)
FILES = FILES_1_0 + FILES_1_1 + FILES_1_2 + FILES_1_3
SIZES = [(32 + 4 * i, 48 - 2 * i) for i in range(N)]  # 1.2: the (H, W) of images of varied sizes
SUBSET = Subset(start=20, stop=20 + N, source_num_samples=50)  # samples 20..31 of a split of 50
TEACHER = example_teacher(weights_sha256=hashlib.sha256(b"fpkit golden teacher").hexdigest(), num_params=78042)
DATASET = example_dataset(name="golden", image_shape=(4, 4, 3))
COMPUTE = example_compute(batch_size=4)


def digests() -> np.ndarray:
    """Per-sample digests of 12 tiny 4x4x3 images whose pixels are (7 * i + j) mod 256."""
    out = []
    for i in range(N):
        pixels = ((7 * i + np.arange(4 * 4 * 3)) % 256).astype(np.uint8).reshape(4, 4, 3)
        out.append(sample_digest(pixels))
    return np.array(out, dtype=np.uint64)


def view_fingerprints(R: np.ndarray, k: int, seed: int) -> np.ndarray:
    """float32 [N, k, r]: normalize(features) @ R for k views of each sample, element-wise only.

    Features are non-negative ("ReLU-like"): float32(rng.random((N, k, d))) from numpy's PCG64.
    """
    f = np.random.default_rng(seed).random((N, k, D)).astype(np.float32)
    sq = np.zeros((N, k), dtype=np.float32)
    for j in range(D):
        sq = sq + f[:, :, j] * f[:, :, j]
    f = f / np.sqrt(sq)[:, :, None]
    out = np.zeros((N, k, R.shape[1]), dtype=np.float32)
    for j in range(D):
        out = out + f[:, :, j : j + 1] * R[j][None, None, :]
    return out


def golden_logits(k: int, seed: int) -> np.ndarray:
    """float32 [N, k, C] teacher logits in [-4, 4): 8 * float32(rng.random) - 4, element-wise."""
    return np.random.default_rng(seed).random((N, k, C)).astype(np.float32) * np.float32(8) - np.float32(4)


def mean_views(v: np.ndarray) -> np.ndarray:
    """float32 mean over the views axis, summed in view order."""
    acc = np.zeros((v.shape[0], v.shape[2]), dtype=np.float32)
    for i in range(v.shape[1]):
        acc = acc + v[:, i]
    return acc / np.float32(v.shape[1])


def _write(
    path: Path,
    *,
    layers,
    labels,
    rows,
    tables,
    dtype,
    codec,
    views=None,
    view_params=None,
    k=None,
    accuracy=None,
    batches=(4, 3, 5),
    version="1.0",
    subset=None,
    policy=None,
    logits=None,
) -> None:
    contents = FileContents(
        layers=layers,
        labels=labels,
        sample_digests=digests(),
        classes=CLASSES,
        teacher=replace(TEACHER, accuracy=accuracy),
        dataset=replace(DATASET, subset=subset, image_shape=(None, None, 3) if policy else DATASET.image_shape),
        views=example_policy_views(policy, k, replay=True, seed=7)
        if policy
        else example_views(k or 8, replay=bool(k), padding=1, seed=7),
        compute=COMPUTE,
        tables=tables,
        views_per_sample=k,
        storage=StorageInfo(dtype=dtype, codec=codec, chunk_rows=CHUNK_ROWS),
        provenance=PROVENANCE,
    )
    if logits is not None:  # format 1.3: (spec, float32 logits [N, C] or [N, K, C])
        contents = replace(contents, logits=logits[0])
        write_logit_file(path, contents, rows, logits[1], views=views, view_params=view_params, batches=batches)
        return
    write_rows(
        path, contents, rows, views=views, view_params=view_params, batches=batches, overwrite=True, version=version
    )


def make_all(outdir: str | Path) -> dict:
    """Write the golden files into ``outdir``; return the expected.json document."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    expected: dict = {"hdf5_version": h5py.version.hdf5_version, "h5py_version": h5py.__version__, "files": {}}

    # 1. float16, codec none, two layers, sample + class tables
    labels = np.array([i % C for i in range(N)], dtype=np.int64)
    R2, R3 = make_projection(D, R_WIDTH, 1), make_projection(D, R_WIDTH, 0)
    rows = {"layer2": mean_views(view_fingerprints(R2, 8, 11)), "layer3": mean_views(view_fingerprints(R3, 8, 12))}
    layers = [LayerSpec("layer2", "avg", D, R2, 1), LayerSpec("layer3", "avg", D, R3, 0)]
    _write(
        outdir / FILES[0],
        layers=layers,
        labels=labels,
        rows=rows,
        tables=("sample", "class"),
        dtype="float16",
        codec="none",
        accuracy=Accuracy(top1=0.75, measured_on="views", count=96),
    )

    # 2. int8, zstd, one layer; class 2 has no sample (its class row is zero)
    labels = np.array([0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0], dtype=np.int64)
    R = make_projection(D, R_WIDTH, 2**63 + 5)
    rows = {"layer3": mean_views(view_fingerprints(R, 8, 13))}
    rows["layer3"][3] = 0.0  # an all-zero row: int8 scale 0
    _write(
        outdir / FILES[1],
        layers=[LayerSpec("layer3", "avg", D, R, 2**63 + 5)],
        labels=labels,
        rows=rows,
        tables=("sample", "class"),
        dtype="int8",
        codec="zstd",
    )

    # 3. float32, gzip, redacted, class table + replayed views (K = 2) with view_params
    labels = np.array([2, 0, 1, 2, 2, 0, 1, 1, 0, 2, 1, 0], dtype=np.int64)
    R = make_projection(D, R_WIDTH, 3)
    v = view_fingerprints(R, 2, 14)
    vp = ViewPolicy(padding=1, flip=True).sample_views(np.arange(N), 2, seed=7)  # the sampler of section 5
    _write(
        outdir / FILES[2],
        layers=[LayerSpec("layer3", "avg", D, R, 3, redacted=True)],
        labels=labels,
        rows={"layer3": mean_views(v)},
        views={"layer3": v},
        view_params=vp,
        k=2,
        tables=("class",),
        dtype="float32",
        codec="gzip",
    )

    # format 1.1: the same float16 file, now with the README dataset and description attributes
    labels = np.array([i % C for i in range(N)], dtype=np.int64)
    rows = {"layer2": mean_views(view_fingerprints(R2, 8, 11)), "layer3": mean_views(view_fingerprints(R3, 8, 12))}
    _write(
        outdir / FILES_1_1[0],
        layers=[LayerSpec("layer2", "avg", D, R2, 1), LayerSpec("layer3", "avg", D, R3, 0)],
        labels=labels,
        rows=rows,
        tables=("sample", "class"),
        dtype="float16",
        codec="none",
        accuracy=Accuracy(top1=0.75, measured_on="views", count=96),
        version="1.1",
    )
    # 1.1, int8 with scales, gzip, a subset: samples 20..31 of a source split of 50
    labels = np.array([1, 0, 2, 2, 1, 0, 0, 1, 2, 1, 0, 2], dtype=np.int64)
    R = make_projection(D, R_WIDTH, 4)
    _write(
        outdir / FILES_1_1[1],
        layers=[LayerSpec("layer3", "avg", D, R, 4)],
        labels=labels,
        rows={"layer3": mean_views(view_fingerprints(R, 8, 15))},
        tables=("sample", "class"),
        dtype="int8",
        codec="gzip",
        version="1.1",
        subset=SUBSET,
    )

    # format 1.2: a resized-crop replay file (view_params int32 [N, 2, 5]) and a center one (K = 1)
    from fpkit.views import CenterPolicy, ResizedCropPolicy, views_for

    for name, policy, k, seed in (
        (FILES_1_2[0], ResizedCropPolicy(16), 2, 16),
        (FILES_1_2[1], CenterPolicy(16, 18), 1, 17),
    ):
        labels = np.array([i % C for i in range(N)], dtype=np.int64)
        R = make_projection(D, R_WIDTH, 5)
        v = view_fingerprints(R, k, seed)
        images = [np.zeros((3, h, w), dtype=np.uint8) for h, w in SIZES]
        vp = views_for(policy, np.arange(N), k, 7, images)  # the samplers of section 5, seed 7
        _write(
            outdir / name,
            layers=[LayerSpec("layer3", "avg", D, R, 5)],
            labels=labels,
            rows={"layer3": mean_views(v)},
            views={"layer3": v},
            view_params=vp,
            k=k,
            tables=("sample", "class"),
            dtype="float16",
            codec="none",
            version="1.2",
            policy=policy,
        )

    # format 1.3: the teacher's logits (C = 3), per sample (mean) and per view (full, topk, sample)
    for name, spec, k, dtype, codec in (
        (FILES_1_3[0], LogitsSpec("mean"), None, "float16", "none"),
        (FILES_1_3[1], LogitsSpec("full", dtype="float32"), 2, "float32", "gzip"),
        (FILES_1_3[2], LogitsSpec("topk", 2), 2, "float16", "none"),
        (FILES_1_3[3], LogitsSpec("sample", 4, temperature=2.0, seed=9), 2, "float16", "zstd"),
    ):
        labels = np.array([i % C for i in range(N)], dtype=np.int64)
        R = make_projection(D, R_WIDTH, 6)
        v = view_fingerprints(R, k or 8, 18)
        z = golden_logits(k or 8, 19)
        vp = ViewPolicy(padding=1, flip=True).sample_views(np.arange(N), k, seed=7) if k else None
        _write(
            outdir / name,
            layers=[LayerSpec("layer3", "avg", D, R, 6)],
            labels=labels,
            rows={"layer3": mean_views(v)},
            views={"layer3": v} if k else None,
            view_params=vp,
            k=k,
            tables=("sample", "class"),
            dtype=dtype,
            codec=codec,
            logits=(spec, z if k else mean_views(z)),
        )

    from fpkit.format import open_fingerprints

    for name in FILES:
        fp = open_fingerprints(outdir / name)
        layers_doc = {}
        for lay in fp.layers:
            entry: dict = {
                "tables": {kind: fp.table(kind, lay.name).tolist() for kind in lay.tables},
                "fidelity_min_cos": dict(lay.fidelity),
                "d": lay.d,
                "r": lay.r,
                "seed": lay.seed,
                "projection_sha256": lay.projection_sha256,
                "projection_stored": lay.projection_stored,
            }
            if lay.projection_stored:
                entry["projection"] = fp.projection(lay.name).tolist()
            layers_doc[lay.name] = entry
        m = fp.metadata
        expected["files"][name] = {
            "sha256": hashlib.sha256((outdir / name).read_bytes()).hexdigest(),
            "size": (outdir / name).stat().st_size,
            "format_version": fp.format_version,
            "storage": m.storage.to_json(),
            "labels": fp.labels.tolist(),
            "sample_digests": [int(x) for x in fp.sample_digests],
            "class_counts": fp.class_counts.tolist(),
            "view_params": None if fp.view_params is None else fp.view_params.tolist(),
            "labels_sha256": m.dataset.labels_sha256,
            "subset": None if m.dataset.subset is None else m.dataset.subset.to_json(),
            "order_sha256": m.dataset.order_sha256,
            "layers": layers_doc,
        }
        if fp.logits_info is not None:
            t = fp.logit_targets()
            expected["files"][name]["logits"] = {
                "spec": {k: v for k, v in fp.metadata.extras["logits"].items() if k != "datasets"},
                "targets": [a.tolist() for a in t] if isinstance(t, tuple) else t.tolist(),
            }
    return expected


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parent / "golden"
    expected = make_all(outdir)
    (outdir / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    for name in FILES:
        info = expected["files"][name]
        print(f"{name}: {info['size']} bytes, sha256 {info['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
