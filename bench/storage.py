"""Storage: bytes and fidelity of fingerprint tables by dtype and r; codecs; the privacy figure.

1. Sizes (computed arithmetically from the shapes, the way fpkit stores them: r values per row of
   the dtype, plus one float32 scale per row for int8), per-sample (N = 50,000) and per-class
   (C = 100) tables at d = 64, for float32/float16/int8 and r in {16, 32, 64, 128, 256}; against
   the teacher (resnet56, 100 classes, parameters counted from fpkit's model, fp32) and against
   soft labels (also arithmetic: N x C fp16 once per image, per view, and FKD-style top-5 per
   view with indices and the crop box).
2. Fidelity: the minimum cosine between stored-and-decoded rows and the float32 rows
   (fpkit.format.quantize.encode/decode, as FingerprintWriter records it), for
   (a) real fingerprints: the embedded CIFAR-10 sample (500 images) through a teacher's layer3 with
       K augmented views (fpkit's make_views), averaged as fpkit build does.  The teacher is the
       embedded trained resnet8 if fpkit/data/embedded_teacher.pt exists, else a randomly
       initialised --feat-arch (the output says which);
   (b) synthetic fingerprints: N ReLU-like d = 64 features (|correlated Gaussian| with per-view
       noise), K views, normalised, projected, averaged.
3. Codecs none/gzip/zstd on float16 r = 128 tables written by FingerprintWriter (synthetic rows,
   N = 50,000; and the real rows): stored bytes of the sample table (h5py get_storage_size),
   compression ratio raw/stored, write time.
4. Privacy: with R known and r >= d, features = phi @ pinv(R): relative reconstruction error for
   phi in float64, float32, float16, int8; for r < d (16, 32, 48) the cosine of the minimum-norm
   reconstruction, and of one that adds a prior mean (the mean of the even-numbered samples'
   features, evaluated on the odd-numbered ones).

0. Storage at ImageNet scale (bench/storage_scale.py): per-sample, per-class and per-view tables
   for N = 1.28 M, C = 1000 from fpkit.format.layout, next to FKD's and TinyViT's published sizes.

Quick (defaults, ~1 min):  python -m bench.storage
Just the ImageNet-scale table:  python -m bench.storage --scale-only
The defaults are the full setting.  Random-weight features instead of the embedded teacher's:
    python -m bench.storage --teacher random --feat-arch resnet56
Smallest (a check that it runs):
    python -m bench.storage --n 1000 --synthetic-n 1000 --real-views 1 --rs 64,128 --privacy-rs 16
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from bench import harness as H

DTYPE_BYTES = {"float32": 4, "float16": 2, "int8": 1}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench.storage",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=50_000, help="samples for the arithmetic sizes")
    p.add_argument("--classes", type=int, default=100, help="classes for the arithmetic sizes")
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--rs", default="16,32,64,128,256")
    p.add_argument("--views", type=int, default=8, help="K, views per sample (sizes of per-view labels too)")
    p.add_argument("--synthetic-n", type=int, default=50_000, help="synthetic fingerprints for fidelity/codecs")
    p.add_argument("--real-views", type=int, default=8, help="views per embedded-sample image")
    p.add_argument(
        "--teacher",
        choices=["auto", "embedded", "random"],
        default="auto",
        help="features for the real fingerprints: the embedded trained teacher or random weights",
    )
    p.add_argument("--feat-arch", default="resnet20", help="random-weight teacher when not using the embedded one")
    p.add_argument("--size-teacher", default="resnet56", help="teacher whose fp32 size is compared")
    p.add_argument("--privacy-rs", default="16,32,48")
    p.add_argument(
        "--scale-only", action="store_true", help="print only the ImageNet-scale table (bench/storage_scale.py)"
    )
    H.add_common_args(p)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- fingerprints


def real_features(args, dev) -> tuple[np.ndarray, np.ndarray, str]:
    """Pooled layer3 features [n, K, d] of the embedded sample, labels, and the teacher's description."""
    from fpkit.augment import ViewPolicy, make_views
    from fpkit.datasets import open_source
    from fpkit.errors import FpkitFileNotFoundError
    from fpkit.features import LayerTap, pool_features
    from fpkit.models import get_cifar_resnet
    from fpkit.teachers import load_embedded_teacher

    src = open_source("embedded", split="test")
    model, what = None, None
    if args.teacher in ("auto", "embedded"):
        try:
            t = load_embedded_teacher()
            model, what = t.model, f"embedded trained teacher ({t.arch}, {t.num_params:,} params)"
        except FpkitFileNotFoundError as e:
            if args.teacher == "embedded":
                raise SystemExit(str(e)) from None
    if model is None:
        torch.manual_seed(args.seed)
        model = get_cifar_resnet(args.feat_arch, 10).eval()
        what = f"randomly initialised {args.feat_arch} (no embedded teacher in this installation)"
    model = model.to(dev).eval()
    k = args.real_views
    policy = ViewPolicy(4, True)
    mean = torch.tensor(src.mean, device=dev)
    std = torch.tensor(src.std, device=dev)
    feats = []
    with LayerTap(model, ["layer3"]) as tap, torch.inference_mode():
        for s in range(0, len(src), 32):
            idx = np.arange(s, min(len(src), s + 32))
            x = make_views(
                src.get_batch(idx).to(dev), torch.from_numpy(policy.views_for(idx, k, args.seed)).to(dev), 4, mean, std
            )
            _, f = tap(x)
            feats.append(pool_features(f["layer3"], "avg").view(len(idx), k, -1).cpu().numpy())
    return np.concatenate(feats).astype(np.float64), src.labels, what


def synthetic_features(n: int, k: int, d: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """ReLU-like features [n, K, d]: |class mean + correlated Gaussian + per-view noise|."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)  # correlation between channels
    centers = rng.standard_normal((classes, d)) @ mix * 0.8
    labels = np.arange(n) % classes
    z = centers[labels] + rng.standard_normal((n, d)) @ mix + 0.5  # common positive offset, like post-ReLU means
    out = np.empty((n, k, d))
    for v in range(k):
        out[:, v] = np.abs(z + 0.3 * rng.standard_normal((n, d)) @ mix)
    return out, labels


def fingerprints(feats: np.ndarray, R: np.ndarray) -> np.ndarray:
    """Per-sample fingerprints as fpkit build makes them, in float32: mean_v normalize(f_v) @ R."""
    f = torch.from_numpy(feats.astype(np.float32))
    n, k, d = f.shape
    from fpkit.features import project_features

    phi = project_features(f.reshape(n * k, d), torch.from_numpy(R)).view(n, k, -1).mean(dim=1)
    return phi.numpy()


def class_means(phi: np.ndarray, labels: np.ndarray, c: int) -> np.ndarray:
    s = np.zeros((c, phi.shape[1]))
    np.add.at(s, labels, phi.astype(np.float64))
    return (s / np.maximum(np.bincount(labels, minlength=c), 1)[:, None]).astype(np.float32)


def fidelity(rows: np.ndarray, dtype: str) -> float:
    from fpkit.format import quantize

    stored, scale = quantize.encode(rows, dtype)
    return quantize.min_row_cosine(quantize.decode(stored, scale), rows)


# --------------------------------------------------------------------------- codecs


def codec_file(path: Path, rows: np.ndarray, labels: np.ndarray, c: int, codec: str, d: int) -> tuple[int, int, float]:
    """Write rows (fp16) with FingerprintWriter; return (file bytes, sample-table storage bytes, write s)."""
    import h5py

    from fpkit.format import FingerprintWriter, LayerSpec, StorageInfo
    from fpkit.projection import make_projection
    from fpkit.testing import example_contents

    n, r = rows.shape
    digests = np.arange(n, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    contents = replace(
        example_contents(
            [LayerSpec("layer3", "avg", d, make_projection(d, r, 0), 0)],
            labels,
            num_classes=c,
            tables=("sample",),
            storage=StorageInfo(codec=codec),
        ),
        sample_digests=digests,
    )
    t0 = time.perf_counter()
    with FingerprintWriter(path, contents, overwrite=True) as w:
        for s in range(0, n, 4096):
            w.append({"layer3": rows[s : s + 4096]})
    dt = time.perf_counter() - t0
    with h5py.File(path, "r", locking=False) as f:
        stored = f["layers/0/sample"].id.get_storage_size()
    return path.stat().st_size, stored, dt


# --------------------------------------------------------------------------- privacy


def privacy(feats: np.ndarray, d: int, rs_full: list[int], rs_low: list[int], seed: int) -> tuple[list, list]:
    """Reconstruction of the (view-averaged, normalised) feature from its fingerprint."""
    from fpkit.format import quantize
    from fpkit.projection import make_projection

    f = feats / np.linalg.norm(feats, axis=-1, keepdims=True)
    target = f.mean(axis=1)  # what a per-sample fingerprint encodes
    full_rows = []
    for r in rs_full:
        R = make_projection(d, r, seed).astype(np.float64)
        P = np.linalg.pinv(R)
        phi64 = target @ R
        phi32 = fingerprints(feats, R.astype(np.float32)).astype(np.float64)
        row = [r]
        for name, phi in [
            ("float64", phi64),
            ("float32", phi32),
            ("float16", phi32.astype(np.float16).astype(np.float64)),
            ("int8", quantize.decode(*quantize.encode(phi32, "int8")).astype(np.float64)),
        ]:
            rec = phi @ P
            err = np.linalg.norm(rec - target, axis=1) / np.linalg.norm(target, axis=1)
            cos = np.sum(rec * target, 1) / np.linalg.norm(rec, axis=1) / np.linalg.norm(target, axis=1)
            row += [float(err.max()), float(cos.min())]
        full_rows.append(row)
    low_rows = []
    prior = target[0::2].mean(axis=0)  # attacker's prior from other data
    t = target[1::2]  # evaluated on the other samples
    for r in rs_low:
        R = make_projection(d, r, seed).astype(np.float64)
        P = np.linalg.pinv(R)
        phi = t @ R
        mn = phi @ P  # minimum-norm solution
        pm = prior + (phi - prior @ R) @ P  # closest to the prior mean
        cos = lambda a: np.sum(a * t, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(t, axis=1)  # noqa: E731
        c1, c2 = cos(mn), cos(pm)
        low_rows.append(
            [
                r,
                float(np.median(c1)),
                float(c1.min()),
                float(c1.max()),
                float(np.median(c2)),
                float(c2.min()),
                float(np.sqrt(r / d)),
            ]
        )
    return full_rows, low_rows


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    args = parse_args(argv)
    run = H.Run("storage", "bench_storage: sizes, fidelity, codecs, privacy of fingerprint tables", args)
    dev = run.device
    from bench.storage_scale import print_scale_table

    run.results["imagenet_scale"] = print_scale_table()  # N = 1.28 M, C = 1000, next to FKD and TinyViT
    if args.scale_only:
        print(f"raw results: {run.save()}")
        return
    from fpkit.models import get_cifar_resnet
    from fpkit.projection import make_projection

    rs = [int(x) for x in args.rs.split(",")]
    n, c, d, k = args.n, args.classes, args.d, args.views
    out = run.results

    # ---- 1. sizes
    params = sum(p.numel() for p in get_cifar_resnet(args.size_teacher, c).parameters())
    teacher_bytes = params * 4
    soft_once = n * c * 2
    soft_views = n * k * c * 2
    fkd_view = 5 * 2 + 5 * 2 + 4 * 2 + 1  # top-5 fp16 values + int16 indices + crop box 4 x int16 + flip
    fkd = n * k * fkd_view
    print(
        f"Teacher {args.size_teacher} ({c} classes): {params:,} parameters = {teacher_bytes:,} B "
        f"= {teacher_bytes / 2**20:.2f} MiB in fp32\n"
    )
    size_rows = []
    for r in rs:
        row = [r]
        for dt in ("float32", "float16", "int8"):
            b = n * r * DTYPE_BYTES[dt] + (n * 4 if dt == "int8" else 0)
            row.append(b / 1e6)
        for dt in ("float32", "float16", "int8"):
            b = c * r * DTYPE_BYTES[dt] + (c * 4 if dt == "int8" else 0)
            row.append(b / 1024)
        row.append(teacher_bytes / (c * r * 4))
        row.append((n * r * 2) / teacher_bytes)
        size_rows.append(row)
    H.print_table(
        f"Table sizes (arithmetic; N={n:,} samples, C={c} classes, d={d}; int8 includes one fp32 scale "
        "per row; file overhead not included)",
        [
            "r",
            "sample fp32 MB",
            "sample fp16 MB",
            "sample int8 MB",
            "class fp32 KiB",
            "class fp16 KiB",
            "class int8 KiB",
            "teacher / class fp32",
            "sample fp16 / teacher",
        ],
        size_rows,
    )
    feat_bytes = n * d * 4
    H.print_table(
        "For comparison (arithmetic)",
        ["what", "bytes", "MB", "vs sample r=128 fp16"],
        [
            [f"teacher {args.size_teacher} fp32", teacher_bytes, teacher_bytes / 1e6, teacher_bytes / (n * 128 * 2)],
            [f"raw pooled features N x d={d} fp32", feat_bytes, feat_bytes / 1e6, feat_bytes / (n * 128 * 2)],
            ["soft labels N x C fp16, one per image", soft_once, soft_once / 1e6, soft_once / (n * 128 * 2)],
            [f"soft labels N x K={k} x C fp16, one per view", soft_views, soft_views / 1e6, soft_views / (n * 128 * 2)],
            [
                f"FKD-style top-5 per view, K={k}: 5 fp16 + 5 int16 idx + box 4 x int16 + flip = {fkd_view} B/view",
                fkd,
                fkd / 1e6,
                fkd / (n * 128 * 2),
            ],
            ["fingerprints per-sample r=128 fp16", n * 128 * 2, n * 128 * 2 / 1e6, 1.0],
            ["fingerprints per-class r=128 fp32", c * 128 * 4, c * 128 * 4 / 1e6, c * 128 * 4 / (n * 128 * 2)],
        ],
    )
    out["sizes"] = {
        "teacher_params": params,
        "teacher_bytes": teacher_bytes,
        "rows": size_rows,
        "soft_labels_once": soft_once,
        "soft_labels_per_view": soft_views,
        "fkd_top5_per_view": fkd,
    }

    # ---- 2. fidelity
    print("computing real features ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    real, real_labels, teacher_what = real_features(args, dev)
    print(
        f"Real fingerprints: embedded CIFAR-10 sample, {real.shape[0]} images x {real.shape[1]} views, layer3 "
        f"of the {teacher_what}; {time.perf_counter() - t0:.1f} s\n"
    )
    syn, syn_labels = synthetic_features(args.synthetic_n, args.views, d, c, args.seed)
    fid_rows = []
    for r in rs:
        R = make_projection(d, r, 0)
        pr, ps = fingerprints(real, R), fingerprints(syn, R)
        cr, cs = class_means(pr, real_labels, 10), class_means(ps, syn_labels, c)
        fid_rows.append(
            [r]
            + [fidelity(pr, dt) for dt in ("float16", "int8")]
            + [fidelity(ps, dt) for dt in ("float16", "int8")]
            + [fidelity(cr, dt) for dt in ("float16", "int8")]
            + [fidelity(cs, dt) for dt in ("float16", "int8")]
        )
    fid_print = [[r[0]] + [f"{v:.7f}" for v in r[1:]] for r in fid_rows]
    H.print_table(
        f"Fidelity: minimum row cosine after storage (float32 = 1 exactly). real = {real.shape[0]} "
        f"embedded images; synthetic = {args.synthetic_n:,} |correlated Gaussian| features; per-class = "
        f"class means (real: 10 classes, synthetic: {c})",
        [
            "r",
            "real fp16",
            "real int8",
            "synth fp16",
            "synth int8",
            "real class fp16",
            "real class int8",
            "synth class fp16",
            "synth class int8",
        ],
        fid_print,
    )
    out["fidelity"] = {"teacher": teacher_what, "rows": fid_rows}

    # ---- 3. codecs
    tmp = Path(tempfile.mkdtemp(prefix="fpkit-bench-storage-"))
    try:
        R = make_projection(d, 128, 0)
        codec_rows = []
        codec_file(tmp / "warmup.h5", fingerprints(syn[:2048], R), syn_labels[:2048], c, "zstd", d)  # untimed
        for name, rows, labels, cc in [
            ("synthetic", fingerprints(syn, R), syn_labels, c),
            ("real", fingerprints(real, R), real_labels, 10),
        ]:
            raw = rows.shape[0] * 128 * 2
            for codec in ("none", "gzip", "zstd"):
                fb, stored, dt = codec_file(tmp / f"{name}-{codec}.h5", rows, labels, cc, codec, d)
                codec_rows.append([f"{name} ({rows.shape[0]:,} rows)", codec, raw, stored, raw / stored, fb, dt])
        H.print_table(
            "Codecs on float16 r=128 sample tables (FingerprintWriter, chunk 1024 rows; 'none' has fletcher32)",
            ["rows", "codec", "raw table B", "stored table B", "ratio raw/stored", "file B", "write s"],
            codec_rows,
        )
        out["codecs"] = codec_rows
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    # ---- 4. privacy
    full_rs = [r for r in rs if r >= d]
    low_rs = [int(x) for x in args.privacy_rs.split(",") if x.strip()]
    priv = {}
    for name, feats in [("real", real), ("synthetic", syn[:10_000])]:
        full_rows, low_rows = privacy(feats, d, full_rs, low_rs, 0)
        H.print_table(
            f"Privacy, {name} features: reconstruct the view-averaged normalised feature with pinv(R), "
            f"r >= d={d} (max relative error, min cosine over {feats.shape[0]:,} samples)",
            ["r", "err fp64", "cos fp64", "err fp32", "cos fp32", "err fp16", "cos fp16", "err int8", "cos int8"],
            [[r[0]] + [f"{v:.2e}" if i % 2 == 0 else f"{v:.7f}" for i, v in enumerate(r[1:])] for r in full_rows],
        )
        H.print_table(
            f"Privacy, {name} features, r < d={d}: cosine of reconstructions (evaluated on "
            f"{feats.shape[0] // 2:,} odd-numbered samples; prior mean from the even-numbered ones)",
            [
                "r",
                "min-norm median",
                "min-norm min",
                "min-norm max",
                "prior-mean median",
                "prior-mean min",
                "sqrt(r/d)",
            ],
            low_rows,
        )
        priv[name] = {"full": full_rows, "low": low_rows}
    out["privacy"] = priv
    run.save()


if __name__ == "__main__":
    main()
